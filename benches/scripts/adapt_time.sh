#!/usr/bin/env bash
# `ner-edge adapt` end to end on one core: 5 new types x 5 support sentences
# (fixtures/adapt/five_types.txt), MiniLM-L6-shaped random-weight bundle, including process start,
# bundle load, graph optimisation, encoding the support set, OT retrieval and writing the pack.
# A one-line `predict` on the same bundle is measured alongside as the load-only baseline.
# Usage: benches/scripts/adapt_time.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-out}
mkdir -p "$out"
cargo build --release -q -p ner-edge -p ner-edge-tools
bin=./target/release/ner-edge
[ -f "$out/minilm-random.nerb" ] || ./target/release/ner-tools make-fixture --shape minilm --out "$out/minilm-random.nerb"
head -n 1 fixtures/samples/news.txt > "$out/one-line.txt"
hyperfine -N --warmup 2 --runs 15 --export-json "$out/adapt_time.json" \
    "taskset -c 0 $bin adapt --bundle $out/minilm-random.nerb fixtures/adapt/five_types.txt --out $out/five.nerp -q" \
    "taskset -c 0 $bin predict --bundle $out/minilm-random.nerb $out/one-line.txt" \
    "taskset -c 0 $bin adapt fixtures/adapt/five_types.txt --out $out/five-tiny.nerp -q" | tee "$out/adapt_time.txt"
