"""Python binding vs the CLI on the same file in the same run (benches/scripts/python_speed.sh).

usage: python python_speed.py CLI INPUT [ROUNDS] [CORE]

1. One thread, one core (`taskset -c CORE`), whole process (start to exit: imports and model
   load included), the default (embedded) model:
   - `ner-edge predict --threads 1 INPUT > /dev/null`
   - `python -c '... ner_edge.load().inference(lines)'` (reads INPUT, tags every line; the
     tagging-only time is the process's own timer around `inference`)
   - `python -c '... ner_edge.load().write_jsonl(lines, /dev/null)'` (the CLI's own output)
2. Two processes on two cores: `ner-edge predict --threads 2 INPUT > OUT` against a
   LocalCluster of 2 worker processes with 1 thread each on loopback (started beforehand and
   restarted before every round, so each round loads the model in both workers):
   `ner_edge.dask.tag_bag(read_lines(INPUT))` + `concatenate` into one JSONL file, whose bytes
   must equal the CLI's.
Rounds alternate the contenders; the best wall time of each is kept. Words are INPUT's
whitespace-separated words (`wc -w`). Prints a Markdown table.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

INFERENCE = """
import sys, time
t0 = time.perf_counter()
import ner_edge
lines = open(sys.argv[1], encoding="utf-8").read().split("\\n")
if lines and lines[-1] == "":
    lines.pop()
model = ner_edge.load()
t1 = time.perf_counter()
found = model.inference(lines)
t2 = time.perf_counter()
assert len(found) == len(lines)
print(t2 - t1)
"""

WRITE_JSONL = """
import sys, time
import ner_edge
lines = open(sys.argv[1], encoding="utf-8").read().split("\\n")
if lines and lines[-1] == "":
    lines.pop()
model = ner_edge.load()
t1 = time.perf_counter()
with open(sys.argv[2], "wb") as out:
    model.write_jsonl(lines, out)
print(time.perf_counter() - t1)
"""


def wall(cmd, stdout=subprocess.DEVNULL):
    """Wall seconds of `cmd` and its stdout text (when not redirected)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"python_speed: {' '.join(cmd)} failed: {done.stderr}")
    return elapsed, done.stdout


def main():
    cli, path = sys.argv[1], os.path.abspath(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    core = sys.argv[4] if len(sys.argv) > 4 else "1"
    words = len(open(path, encoding="utf-8").read().split())
    lines = sum(1 for _ in open(path, encoding="utf-8"))
    pin = ["taskset", "-c", core]
    py = sys.executable
    work = tempfile.mkdtemp()
    best = {}
    tagging = {}

    def keep(name, seconds):
        best[name] = min(best.get(name, float("inf")), seconds)

    # 1. One thread on one core.
    for _ in range(rounds):
        keep("cli1", wall([*pin, cli, "predict", "--threads", "1", path])[0])
        seconds, out = wall([*pin, py, "-c", INFERENCE, path], stdout=subprocess.PIPE)
        keep("inference", seconds)
        tagging["inference"] = min(tagging.get("inference", float("inf")), float(out))
        seconds, out = wall([*pin, py, "-c", WRITE_JSONL, path, os.devnull],
                            stdout=subprocess.PIPE)
        keep("write_jsonl", seconds)
    one_line = os.path.join(work, "one.txt")
    with open(path, encoding="utf-8") as f, open(one_line, "w", encoding="utf-8") as g:
        g.write(f.readline())
    load_only = min(wall([*pin, cli, "predict", "--threads", "1", one_line])[0]
                    for _ in range(rounds))

    # 2. Two workers on two cores.
    import ner_edge.dask
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    cli_out = os.path.join(work, "cli.jsonl")
    identical = True
    for _ in range(rounds):
        with open(cli_out, "wb") as f:
            keep("cli2", wall([cli, "predict", "--threads", "2", path], stdout=f)[0])
        client.restart()
        out_dir = os.path.join(work, "parts")
        shutil.rmtree(out_dir, ignore_errors=True)
        start = time.perf_counter()
        parts = ner_edge.dask.tag_bag(ner_edge.dask.read_lines(path, blocks_per_partition=1), out_dir)
        merged = ner_edge.dask.concatenate(parts, os.path.join(work, "dask.jsonl"))
        keep("dask", time.perf_counter() - start)
        identical &= open(merged, "rb").read() == open(cli_out, "rb").read()
    client.close()
    cluster.close()
    shutil.rmtree(work)

    def row(name, label, base):
        s = best[name]
        return f"| {label} | {s:.2f} | {words / s:,.0f} | {best[base] / s:.3f} |"

    print(f"input: {path}: {lines:,} lines, {words:,} words; best of {rounds} rounds")
    print()
    print("| contender | wall s | words/s | ratio to the CLI |")
    print("|---|---:|---:|---:|")
    print(row("cli1", "`ner-edge predict --threads 1` (core " + core + ")", "cli1"))
    print(row("inference", "Python `model.inference(lines)`, 1 thread (core " + core + ")", "cli1"))
    print(row("write_jsonl", "Python `model.write_jsonl(lines, f)`, 1 thread (core " + core + ")",
              "cli1"))
    print(row("cli2", "`ner-edge predict --threads 2`", "cli2"))
    print(row("dask", "Dask `tag_bag(read_lines(f))` + `concatenate`, 2 workers × 1 thread",
              "cli2"))
    print()
    cli_tagging = best["cli1"] - load_only
    print(f"tagging only, one thread: CLI {cli_tagging:.2f} s (wall minus a one-line run, "
          f"{load_only:.2f} s), Python inference {tagging['inference']:.2f} s "
          f"(ratio {cli_tagging / tagging['inference']:.3f})")
    print(f"Dask output identical to the CLI's in every round: {identical}")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
