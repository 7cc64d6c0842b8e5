"""spaCy en_core_web_sm (NER-only pipeline) beside ner-edge.

speed: tags every line of INPUT (one text per line, as `ner-edge predict` reads it) and prints
one JSON object: words/s, sentences/s, peak RSS (MB).
conll: tags CoNLL-2003 test (pre-tokenised words) and prints entity-level micro P/R/F1 with
seqeval's default mode after the type mapping below.

Type mapping (OntoNotes -> CoNLL): PERSON->PER; ORG->ORG; GPE, LOC, FAC->LOC; NORP, EVENT,
WORK_OF_ART, LAW, LANGUAGE, PRODUCT->MISC; DATE, TIME, PERCENT, MONEY, QUANTITY, ORDINAL,
CARDINAL->O (dropped).
"""

import json
import resource
import sys
import time

MAPPING = {
    "PERSON": "PER",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
    "NORP": "MISC",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
    "PRODUCT": "MISC",
}


def load():
    """en_core_web_sm with every component but `ner` left out (its `tok2vec` kept only when the
    NER component listens to it)."""
    import spacy

    others = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
    try:
        nlp = spacy.load("en_core_web_sm", exclude=others + ["tok2vec"])
        nlp("Smoke test in Paris .")
    except Exception:
        nlp = spacy.load("en_core_web_sm", exclude=others)
    return nlp


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def speed(path):
    nlp = load()
    lines = [l.rstrip("\n") for l in open(path, encoding="utf-8") if l.strip()]
    start = time.perf_counter()
    words = 0
    for doc in nlp.pipe(lines, batch_size=64):
        words += len(doc)
    secs = time.perf_counter() - start
    print(json.dumps({
        "peer": "spacy en_core_web_sm (ner only)",
        "sentences": len(lines),
        "words": words,
        "seconds": secs,
        "words_per_s": words / secs,
        "sentences_per_s": len(lines) / secs,
        "peak_rss_mb": peak_rss_mb(),
    }))


def read_conll(path):
    sents, cur = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if cur:
                sents.append(cur)
                cur = []
            continue
        cols = line.split(" ")
        cur.append((cols[0], cols[-1]))
    if cur:
        sents.append(cur)
    return sents


def chunks(tags):
    """conlleval / seqeval default-mode chunks of a BIO sequence as (start, end, type)."""
    out, start, kind = [], None, None
    for i, t in enumerate(tags + ["O"]):
        p, _, k = t.partition("-")
        if start is not None and (t == "O" or p == "B" or k != kind):
            out.append((start, i, kind))
            start = None
        if t != "O" and (start is None):
            start, kind = i, k
    return set(out)


def conll(path):
    from spacy.tokens import Doc

    nlp = load()
    sents = read_conll(path)
    tp = pred = gold = 0
    for sent in sents:
        words = [w for w, _ in sent]
        doc = Doc(nlp.vocab, words=words)
        for _, proc in nlp.pipeline:
            doc = proc(doc)
        tags = ["O"] * len(words)
        for ent in doc.ents:
            kind = MAPPING.get(ent.label_)
            if kind is None:
                continue
            tags[ent.start] = "B-" + kind
            for i in range(ent.start + 1, ent.end):
                tags[i] = "I-" + kind
        g = chunks([t for _, t in sent])
        p = chunks(tags)
        tp += len(g & p)
        pred += len(p)
        gold += len(g)
    prec = tp / pred if pred else 0.0
    rec = tp / gold if gold else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    print(json.dumps({"peer": "spacy en_core_web_sm (ner only)", "sentences": len(sents),
                      "precision": prec, "recall": rec, "f1": f1}))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("speed", "conll"):
        sys.exit("usage: spacy_peer.py speed INPUT | conll CONLL_TEST")
    {"speed": speed, "conll": conll}[sys.argv[1]](sys.argv[2])
