"""onnxruntime on the encoder exported from a ner-edge bundle, beside ner-edge.

usage: onnx_peer.py ENCODER.onnx VOCAB.txt INPUT [THREADS]

Tags nothing: it runs the bundle's own encoder graph (`ner-tools extract-onnx`: inputs input_ids,
attention_mask and, for bundles with word shapes, shape_ids — fed as zeros, which costs the
same as the real classes since the outputs are not used; outputs boundary, types) on the WordPiece ids of every non-empty line of INPUT
(the bundle's vocab from `ner-tools extract-vocab`, BERT uncased basic tokenisation + WordPiece
from `tokenizers`, [CLS] ... [SEP], truncated at 512 pieces) and prints one JSON object: load and
run seconds, words/s and sentences/s of the run (words = whitespace-separated words of the input,
as `wc -w` counts them, the same number for every tagger of run_peers.sh), pieces, peak RSS (MB).

Batching as ner-edge does it (runtime/src/encoder: length-sorted batches): lines sorted by piece
count, cut into batches of at most 32 lines and 2,048 padded positions, each padded to its
longest line (ONNX_PEER_MAX_LINES=1 in the environment: one line per call, batch 1). One intra-op
and one inter-op thread (THREADS sets intra-op), sequential execution, all graph optimisations.
Emissions, CRF and span extraction are ner-edge's own and are not counted here, so this is a
lower bound on what a Python tagger built on onnxruntime would take.
"""

import json
import os
import resource
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import BertWordPieceTokenizer

MAX_LINES = int(os.environ.get("ONNX_PEER_MAX_LINES", "32"))  # 1: one line per call
MAX_TOKENS = 2048


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    onnx, vocab, path = sys.argv[1:4]
    threads = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if names not in (["input_ids", "attention_mask"], ["input_ids", "attention_mask", "shape_ids"]):
        sys.exit(f"onnx_peer: unexpected encoder inputs {names}")
    with_shapes = len(names) == 3
    tok = BertWordPieceTokenizer(vocab, lowercase=True)
    tok.enable_truncation(512)
    lines = [l.rstrip("\n") for l in open(path, encoding="utf-8") if l.strip()]
    load_s = time.perf_counter() - t0

    start = time.perf_counter()
    encs = tok.encode_batch(lines)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
    pieces = 0
    batches = 0
    i = 0
    while i < len(order):
        j = i + 1
        while (j < len(order) and j - i < MAX_LINES
               and (j - i + 1) * len(encs[order[j]].ids) <= MAX_TOKENS):
            j += 1
        batch = [encs[k] for k in order[i:j]]
        width = max(len(e.ids) for e in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for r, e in enumerate(batch):
            ids[r, :len(e.ids)] = e.ids
            mask[r, :len(e.ids)] = 1
            pieces += len(e.ids)
        feed = {"input_ids": ids, "attention_mask": mask}
        if with_shapes:
            feed["shape_ids"] = np.zeros_like(ids)
        sess.run(None, feed)
        batches += 1
        i = j
    secs = time.perf_counter() - start
    words = sum(len(l.split()) for l in lines)
    print(json.dumps({
        "peer": f"onnxruntime {ort.__version__}, same encoder graph (encoder only)",
        "sentences": len(lines),
        "words": words,
        "pieces": pieces,
        "batches": batches,
        "load_seconds": load_s,
        "seconds": secs,
        "words_per_s": words / secs,
        "sentences_per_s": len(lines) / secs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
