#!/usr/bin/env bash
# `ner-edge adapt` end to end on one core: 5 new types x 5 support sentences
# (fixtures/adapt/five_types.txt), MiniLM-L6-shaped random-weight bundle, including process start,
# bundle load, graph optimisation, encoding the support set, OT retrieval and writing the pack.
# A one-line `predict` on the same bundle is measured alongside as the load-only baseline, and
# `adapt --tune-heads 30` (the same plus 30 head-tuning steps on the cached hidden states).
# Usage: benches/scripts/adapt_time.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-out}
mkdir -p "$out"
cargo build --release -q -p ner-edge -p ner-edge-tools
bin=${CARGO_TARGET_DIR:-target}/release/ner-edge
tools=${CARGO_TARGET_DIR:-target}/release/ner-tools
[ -f "$out/minilm-random.nerb" ] || "$tools" make-fixture --shape minilm --out "$out/minilm-random.nerb"
head -n 1 fixtures/samples/news.txt > "$out/one-line.txt"
hyperfine -N --warmup 2 --runs 15 --export-json "$out/adapt_time.json" \
    "taskset -c 0 $bin adapt --bundle $out/minilm-random.nerb fixtures/adapt/five_types.txt --out $out/five.nerp -q" \
    "taskset -c 0 $bin adapt --bundle $out/minilm-random.nerb fixtures/adapt/five_types.txt --out $out/five-tuned.nerp -q --tune-heads 30" \
    "taskset -c 0 $bin predict --bundle $out/minilm-random.nerb $out/one-line.txt" \
    "taskset -c 0 $bin adapt fixtures/adapt/five_types.txt --out $out/five-default.nerp -q" | tee "$out/adapt_time.txt"
