#!/usr/bin/env bash
# Issue 18: LightNER's low-resource protocol (CoNLL-2003 source -> MIT Movie, MIT Restaurant,
# ATIS) with the four adaptation modes: gradient-free adapt, head tuning, prompt adapters,
# prompts + heads. K training sentences per type drawn from each target's train set (3 subsets),
# the pack's types alone tag the whole target test set, conlleval micro F1.
# Usage: [TARGETS="mit-movie mit-restaurant atis"] benches/scripts/lightner_protocol.sh BUNDLE [OUT_DIR] [K ...]
#   BUNDLE: the CoNLL-only source model (configs/lightner-source-conll.toml), or any bundle.
#   K defaults to 10 20 50.
# Skips with a message when ../shared/data is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:?usage: lightner_protocol.sh BUNDLE [OUT_DIR] [K ...]}
out=${2:-target/bench-out/lightner}
shift $(( $# >= 2 ? 2 : 1 ))
ks=("$@")
[ ${#ks[@]} -gt 0 ] || ks=(10 20 50)
data=../shared/data
if [ ! -d "$data" ]; then
    echo "skipped: $data is absent"
    exit 0
fi
mkdir -p "$out"
cargo build --release -q -p ner-edge-tools
tools=${CARGO_TARGET_DIR:-target}/release/ner-tools
per_type=()
for k in "${ks[@]}"; do per_type+=(--per-type "$k"); done
run() {
    local name=$1 train=$2 test=$3
    "$tools" eval low-resource --bundle "$bundle" --train "$train" --test "$test" \
        "${per_type[@]}" --samples 3 --seed 1 --threads 2 --report "$out/$name.md" \
        2> >(tee "$out/$name.log" >&2)
}
for target in ${TARGETS:-mit-movie mit-restaurant atis}; do
    case $target in
        mit-movie) run mit-movie "$data/mit_movie/engtrain.bio.txt" "$data/mit_movie/engtest.bio.txt" ;;
        mit-restaurant) run mit-restaurant "$data/mit_restaurant/train.txt" "$data/mit_restaurant/test.txt" ;;
        atis) run atis "$data/atis/train" "$data/atis/test" ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
done
