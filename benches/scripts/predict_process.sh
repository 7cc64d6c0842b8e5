#!/usr/bin/env bash
# Whole-process figures for `ner-edge predict`, one thread: throughput on a generated 2,000-sentence
# news-like file, peak RSS (/usr/bin/time -v), cold start (process start to first output line,
# hyperfine over a one-line input). Uses a MiniLM-L6-shaped random-weight bundle (speed only).
# Usage: benches/scripts/predict_process.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-out}
mkdir -p "$out"
cargo build --release -q -p ner-edge -p ner-edge-tools
bin=./target/release/ner-edge
./target/release/ner-tools make-fixture --shape minilm --out "$out/minilm-random.nerb"
./target/release/ner-tools gen-text --sentences 2000 --seed 1 --out "$out/news-2000.txt"
head -n 1 "$out/news-2000.txt" > "$out/one-line.txt"
words=$(wc -w < "$out/news-2000.txt")
for bundle in "$out/minilm-random.nerb" fixtures/bundles/tiny.nerb; do
    name=$(basename "$bundle" .nerb)
    /usr/bin/time -v "$bin" predict --bundle "$bundle" "$out/news-2000.txt" > "$out/pred-$name.jsonl" 2> "$out/time-$name.txt"
    wall=$(grep "Elapsed (wall clock)" "$out/time-$name.txt" | awk '{print $NF}')
    rss=$(grep "Maximum resident set size" "$out/time-$name.txt" | awk '{print $NF}')
    secs=$(echo "$wall" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    echo "$name: 2000 sentences, $words words, wall ${secs}s, $(awk -v w="$words" -v s="$secs" 'BEGIN{printf "%.0f", w/s}') words/s, $(awk -v s="$secs" 'BEGIN{printf "%.1f", 2000/s}') sentences/s, peak RSS $((rss / 1024)) MB" | tee -a "$out/predict_process.txt"
done
if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 3 --runs 20 --export-json "$out/cold_start.json" \
        "$bin predict --bundle $out/minilm-random.nerb $out/one-line.txt" \
        "$bin predict $out/one-line.txt" | tee -a "$out/predict_process.txt"
else
    echo "hyperfine not installed (apt-get install hyperfine); cold start not measured" | tee -a "$out/predict_process.txt"
fi
