#!/usr/bin/env bash
# Rebuilds the bundle benches/gpu/train.sh returned in parts and checks it.
#
#   benches/gpu/collect.sh FILES_AT DEST
#
# FILES_AT is the folder the device call's $OUT came back in; DEST receives model.nerb (checked
# against the returned SHA256SUMS and opened with `ner-edge inspect`), log.jsonl, config.toml
# and train.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
from=${1:?usage: benches/gpu/collect.sh FILES_AT DEST}
dest=${2:?usage: benches/gpu/collect.sh FILES_AT DEST}
mkdir -p "$dest"
(cd "$from" && grep ' model\.nerb\.' SHA256SUMS | sha256sum -c --quiet) \
    || { echo "collect.sh: a part does not match SHA256SUMS" >&2; exit 1; }
cat "$from"/model.nerb.* >"$dest/model.nerb"
want=$(awk '$2 == "model.nerb" { print $1 }' "$from/SHA256SUMS")
[ "$(sha256sum "$dest/model.nerb" | cut -d' ' -f1)" = "$want" ] \
    || { echo "collect.sh: the rebuilt bundle does not match SHA256SUMS" >&2; exit 1; }
for f in log.jsonl config.toml train.log; do
    [ -f "$from/$f" ] && cp "$from/$f" "$dest/"
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${NER_EDGE_CACHE:-$HOME/.cache/ner-edge}/target}
cargo run --quiet --release -p ner-edge -- inspect "$dest/model.nerb" | head -20
echo "collect.sh: $dest/model.nerb"
