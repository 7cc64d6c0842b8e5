#!/usr/bin/env bash
# Speed of `ner-edge predict` with and without context (issue 17), one thread, whole process:
# the CoNLL-2003 test text (one sentence per line, a blank line between -DOCSTART- documents)
# tagged by a baseline binary and by this checkout's binary without context (the cost of having
# context fusion at all; target ratio >= 0.97), and by this binary with --doc-context N on a
# bundle with a context gate (the cost of using context). Rounds alternate the three runs.
# Usage: benches/scripts/context_speed.sh OLD_BIN GATED_BUNDLE [PLAIN_BUNDLE] [ROUNDS] [N]
#   OLD_BIN: ner-edge built from the commit to compare with, e.g.
#     git worktree add ../old <rev> && (cd ../old && cargo build --release -p ner-edge)
set -euo pipefail
cd "$(dirname "$0")/../.."
old=${1:?old ner-edge binary}
gated=${2:?bundle with a context gate}
plain=${3:-models/default.nerb}
rounds=${4:-3}
n=${5:-3}
test=../shared/data/conll2003/test.txt
if [ ! -f "$test" ]; then
    echo "skipped: $test not found (needs ../shared/data)"
    exit 0
fi
cargo build --release -q -p ner-edge
new=${CARGO_TARGET_DIR:-target}/release/ner-edge
out=$(mktemp -d)
awk 'BEGIN { s = "" }
     /^-DOCSTART-/ { if (s != "") { print s; s = "" } printf "\n"; next }
     NF == 0 { if (s != "") { print s; s = "" } next }
     { s = (s == "" ? $1 : s " " $1) }
     END { if (s != "") print s }' "$test" | sed '1{/^$/d}' > "$out/conll-test.txt"
words=$(wc -w < "$out/conll-test.txt")
run() {
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$out/t" "$@" > "$out/$name.jsonl"
    read -r secs kb < "$out/t"
    echo "$name $secs $kb"
}
for r in $(seq "$rounds"); do
    run old "$old" predict --bundle "$plain" --threads 1 "$out/conll-test.txt"
    run new "$new" predict --bundle "$plain" --threads 1 "$out/conll-test.txt"
    run context "$new" predict --bundle "$gated" --threads 1 --doc-context "$n" "$out/conll-test.txt"
done | tee "$out/runs.txt"
cmp -s "$out/old.jsonl" "$out/new.jsonl" && echo "old and new output without context: identical"
awk -v w="$words" '{ if (!($1 in best) || $2 < best[$1]) best[$1] = $2; if ($3 > rss[$1]) rss[$1] = $3 }
    END {
        for (k in best) printf "%s: best %.2f s, %.0f words/s, peak RSS %d MiB\n", k, best[k], w / best[k], rss[k] / 1024
        printf "new/old speed without context: %.3fx; with --doc-context vs without: %.3fx\n", best["old"] / best["new"], best["new"] / best["context"]
    }' "$out/runs.txt"
rm -rf "$out"
