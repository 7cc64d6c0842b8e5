#!/usr/bin/env bash
# Encoder forward, one thread, batch 1: tract (ner-edge) vs onnxruntime on the SAME ONNX graph,
# measured in the same run, alternating, so machine noise hits both alike.
# Usage: benches/scripts/encoder_vs_ort.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-out}
mkdir -p "$out"
venv=${NER_EDGE_CACHE:-$HOME/.cache/ner-edge}/bench-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime==1.23.2 numpy
fi
cargo build --release -q -p ner-edge-tools -p ner-edge-benches
./target/release/ner-tools make-fixture --shape minilm --out "$out/minilm-random.nerb"
./target/release/ner-tools extract-onnx "$out/minilm-random.nerb" "$out/minilm-random.onnx"
lens="16 32 128"
{
    for round in 1 2; do
        OMP_NUM_THREADS=1 "$venv/bin/python" benches/scripts/ort_encoder.py "$out/minilm-random.onnx" $lens
        ./target/release/encoder-timing "$out/minilm-random.nerb" $lens
    done
} | tee "$out/encoder_vs_ort.txt"
awk '{ key=$2; if ($1=="ort") o[key]=(key in o && o[key]<$3)?o[key]:$3; else t[key]=(key in t && t[key]<$3)?t[key]:$3 }
     END { printf "%-6s %10s %10s %8s\n", "tokens", "tract_ms", "ort_ms", "ratio";
           for (k in t) printf "%-6s %10.3f %10.3f %8.2f\n", k, t[k], o[k], t[k]/o[k] }' \
    "$out/encoder_vs_ort.txt" | sort -n | tee "$out/encoder_vs_ort_summary.txt"
