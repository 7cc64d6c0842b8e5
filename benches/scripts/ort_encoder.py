"""Times onnxruntime on an ner-edge encoder graph, one thread, batch 1.

Usage: python ort_encoder.py MODEL.onnx LEN [LEN ...]
Prints one line per length: `ort LEN median_ms p10_ms p90_ms`.
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    path, lengths = sys.argv[1], [int(x) for x in sys.argv[2:]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n in lengths:
        ids = rng.integers(1000, 20000, size=(1, n), dtype=np.int64)
        ids[0, 0], ids[0, -1] = 101, 102
        mask = np.ones((1, n), dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        for _ in range(10):
            sess.run(None, feed)
        times = []
        deadline = time.perf_counter() + 3.0
        while len(times) < 30 or (time.perf_counter() < deadline and len(times) < 500):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        k = len(times)
        print(f"ort {n} {times[k // 2]:.3f} {times[k // 10]:.3f} {times[(9 * k) // 10]:.3f}")


if __name__ == "__main__":
    main()
