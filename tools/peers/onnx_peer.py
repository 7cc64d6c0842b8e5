"""onnxruntime on the encoder exported from a ner-edge bundle, beside ner-edge.

usage: onnx_peer.py ENCODER.onnx VOCAB.txt INPUT [THREADS]

Tags nothing: it runs the same encoder graph (`ner-tools extract-onnx`) on the WordPiece ids of
every line of INPUT (BERT uncased basic tokenisation + WordPiece from `tokenizers`, [CLS] ...
[SEP], at most 512 pieces), in batches of 32 lines, and prints one JSON object: words/s,
sentences/s, peak RSS (MB). Emissions, CRF and span extraction are ner-edge's own and are not
counted here, so this is a lower bound on what a Python tagger on onnxruntime would take.
"""

import json
import resource
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import BertWordPieceTokenizer


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    onnx, vocab, path = sys.argv[1:4]
    threads = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    tok = BertWordPieceTokenizer(vocab, lowercase=True)
    tok.enable_truncation(512)
    lines = [l.rstrip("\n") for l in open(path, encoding="utf-8") if l.strip()]
    names = [i.name for i in sess.get_inputs()]
    start = time.perf_counter()
    words = 0
    for i in range(0, len(lines), 32):
        encs = tok.encode_batch(lines[i:i + 32])
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for j, e in enumerate(encs):
            ids[j, :len(e.ids)] = e.ids
            mask[j, :len(e.ids)] = 1
            words += len(set(w for w in e.word_ids if w is not None))
        sess.run(None, {names[0]: ids, names[1]: mask})
    secs = time.perf_counter() - start
    print(json.dumps({
        "peer": "onnxruntime (same encoder graph, encoder only)",
        "sentences": len(lines),
        "words": words,
        "seconds": secs,
        "words_per_s": words / secs,
        "sentences_per_s": len(lines) / secs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
