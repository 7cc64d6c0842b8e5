#!/usr/bin/env bash
# Padded tokens per encoder call (`predict --batch-tokens`, hidden option): wall time and peak
# RSS of `ner-edge predict` on the CoNLL-2003 test sentences (one per line) for several budgets,
# with 1 and 2 threads, and whether the entities (start, end, type) stay the same as with the
# first budget. Scores may move in the 4th decimal: batches pad differently.
#
# Usage: benches/scripts/batch_tokens.sh [BUNDLE] [BUDGETS...]
#        (default: models/default.nerb, budgets 2048 512 384 256 192 128)
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-models/default.nerb}
shift || true
budgets=("$@")
[ ${#budgets[@]} -gt 0 ] || budgets=(2048 512 384 256 192 128)
test=../shared/data/conll2003/test.txt
if [ ! -f "$test" ]; then
    echo "skipped: $test is absent" >&2
    exit 0
fi
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ner-edge
bin=${CARGO_TARGET_DIR:-target}/release/ner-edge
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '$1 == "-DOCSTART-" { next }
     NF == 0 { if (s != "") print s; s = ""; next }
     { s = (s == "" ? $1 : s " " $1) }
     END { if (s != "") print s }' "$test" >"$tmp/text.txt"
entities() {
    python3 -c 'import json,sys
for l in sys.stdin: print([(e["start"], e["end"], e["type"]) for e in json.loads(l)["entities"]])'
}
echo "| threads | batch tokens | wall (s) | peak RSS (MiB) | entities as with ${budgets[0]} |"
echo "|---:|---:|---:|---:|---|"
for threads in 1 2; do
    for bt in "${budgets[@]}"; do
        /usr/bin/time -f "%e %M" -o "$tmp/time" "$bin" predict --bundle "$bundle" \
            --threads "$threads" --batch-tokens "$bt" "$tmp/text.txt" >"$tmp/out.jsonl"
        read -r wall rss <"$tmp/time"
        entities <"$tmp/out.jsonl" >"$tmp/ents.$bt"
        same=$(cmp -s "$tmp/ents.${budgets[0]}" "$tmp/ents.$bt" && echo yes || echo NO)
        echo "| $threads | $bt | $wall | $((rss / 1024)) | $same |"
    done
done
