#!/usr/bin/env bash
# Prepares, on this machine, everything a GPU training run needs that the device machine does
# not have (it has no Rust toolchain, no ../shared and no network), in parts small enough to
# travel with the checkout:
#
#   ner-train          release build, stripped (the trainer; built without the embedded bundle)
#   cuda_training      the whole-model CPU-vs-CUDA parity tests, run before training on a GPU
#   encoder/           the MiniLM encoder with f16 weights (ner-tools fetch-encoder --f16-copy)
#   corpora.nerc       every corpus file CONFIG reads (ner-train pack-corpora)
#
# packed as one tar.xz, split into parts of at most PART_BYTES (default 29,000,000), with
# SHA256SUMS over the parts and the archive. Each device call carries some parts (see
# benches/gpu/TRAINING.md for the size arithmetic); benches/gpu/train.sh receives them there.
#
#   benches/gpu/stage.sh CONFIG [STAGE]        (STAGE defaults to gpu-stage, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/../.."
config=${1:?usage: benches/gpu/stage.sh CONFIG [STAGE]}
stage=${2:-gpu-stage}
part_bytes=${PART_BYTES:-29000000}
[ -f "$config" ] || { echo "stage.sh: $config not found" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${NER_EDGE_CACHE:-$HOME/.cache/ner-edge}/target}

rm -rf "$stage"
work="$stage/work"
mkdir -p "$work"
cargo build --release -p ner-edge-trainer --bin ner-train -p ner-edge-tools --bin ner-tools
cp "$CARGO_TARGET_DIR/release/ner-train" "$work/ner-train"
parity=$(cargo test --release -p ner-edge-trainer --test cuda_training --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])
')
[ -x "$parity" ] || { echo "stage.sh: the cuda_training test binary was not built" >&2; exit 1; }
cp "$parity" "$work/cuda_training"
strip "$work/ner-train" "$work/cuda_training"
if grep -q '^init *= *"minilm"' "$config"; then
    "$CARGO_TARGET_DIR/release/ner-tools" fetch-encoder --f16-copy "$work/encoder" >/dev/null
fi
"$work/ner-train" pack-corpora --config "$config" --out "$work/corpora.nerc"
printf '%s\n' "$config" >"$work/CONFIG"
git rev-parse HEAD >"$work/COMMIT"

(cd "$work" && sha256sum -- * encoder/* 2>/dev/null | grep -v ' CONTENTS$' >CONTENTS || true)
tar -C "$work" -cf - . | xz -T2 -6 >"$stage/stage.tar.xz"
rm -rf "$work"
(cd "$stage" && split -b "$part_bytes" -d -a 2 stage.tar.xz part. && sha256sum stage.tar.xz part.* >SHA256SUMS)
rm "$stage/stage.tar.xz"
ls -l "$stage"
echo "stage.sh: carry SHA256SUMS with every part; e.g. run(carry=[\"$stage/SHA256SUMS\", \"$stage/part.00\"], ...)"
