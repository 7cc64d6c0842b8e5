#!/usr/bin/env bash
# Builds the GPU check binaries (release) and copies them, stripped, into DEST, so that
# benches/gpu/run.sh can run them on a GPU machine that has no Rust toolchain.
#
#   benches/gpu/build.sh DEST
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:?usage: benches/gpu/build.sh DEST}
mkdir -p "$dest"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${NER_EDGE_CACHE:-$HOME/.cache/ner-edge}/target}
tests=(cuda_parity cuda_training kernels_compile nccl_training)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo test --release -p ner-edge-trainer "${args[@]}" --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
    cp "$exe" "$dest/$name"
done
cargo build --release -p ner-edge-benches --bin gpu-train-step -p ner-edge-trainer --bin ner-train
cp "$CARGO_TARGET_DIR/release/gpu-train-step" "$CARGO_TARGET_DIR/release/ner-train" "$dest/"
strip "$dest"/* 2>/dev/null || true
for t in "${tests[@]}" gpu-train-step ner-train; do
    [ -x "$dest/$t" ] || { echo "build.sh: $dest/$t missing" >&2; exit 1; }
done
ls -l "$dest"
