#!/usr/bin/env bash
# Rehearses a GPU training run on this machine, as the device calls would do it, before any
# device time is spent:
#
#   1. benches/gpu/stage.sh CONFIG (here);
#   2. a copy of the checkout as the device receives it (tracked and untracked, not ignored
#      files), with no ../shared beside it and the stash in a fresh folder;
#   3. call 1: part.00 and SHA256SUMS carried, `train.sh receive`;
#   4. call 2: the other parts carried, `train.sh run OUT MINUTES` with BACKEND (default cpu);
#   5. benches/gpu/collect.sh on what OUT holds.
#
#   benches/gpu/rehearse.sh CONFIG MINUTES [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
config=${1:?usage: benches/gpu/rehearse.sh CONFIG MINUTES [WORKDIR]}
minutes=${2:?usage: benches/gpu/rehearse.sh CONFIG MINUTES [WORKDIR]}
root=${3:-$(mktemp -d)}
repo=$(pwd)
rm -rf "$root/device" "$root/stash" "$root/out" "$root/collected"
mkdir -p "$root/device/main" "$root/stash" "$root/out"

benches/gpu/stage.sh "$config" gpu-stage
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C "$root/device/main" -xf -
carry() { mkdir -p "$root/device/main/gpu-stage" && cp "$@" "$root/device/main/gpu-stage/"; }

carry gpu-stage/SHA256SUMS gpu-stage/part.00
(cd "$root/device/main" && NER_EDGE_STASH="$root/stash" benches/gpu/train.sh receive)
rm -rf "$root/device/main/gpu-stage"
carry gpu-stage/SHA256SUMS $(ls gpu-stage/part.* | grep -v 'part\.00$' || true)
(cd "$root/device/main" && NER_EDGE_STASH="$root/stash" BACKEND=${BACKEND:-cpu} \
    benches/gpu/train.sh run "$root/out" "$minutes")
cd "$repo"
benches/gpu/collect.sh "$root/out" "$root/collected"
echo "rehearse.sh: all steps passed; results in $root"
