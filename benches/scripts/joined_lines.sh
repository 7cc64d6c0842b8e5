#!/usr/bin/env bash
# Documents, not only sentences: entities `ner-edge predict` finds in the first N sentences of
# CoNLL-2003 test when they are given one per line, then joined K to a line (K = 2, 5, 10, 20,
# 40), and as paragraphs of 10 sentences (one per line) with --paragraphs. A model that reads
# documents finds about the same entities whatever the layout.
#
# Usage: benches/scripts/joined_lines.sh [BUNDLE] [N]   (default: the embedded model, N = 600)
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-}
n=${2:-600}
test=../shared/data/conll2003/test.txt
if [ ! -f "$test" ]; then
    echo "skipped: $test is absent" >&2
    exit 0
fi
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ner-edge
bin=${CARGO_TARGET_DIR:-target}/release/ner-edge
args=(predict --threads 2)
[ -n "$bundle" ] && args+=(--bundle "$bundle")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v n="$n" '$1 == "-DOCSTART-" { next }
     NF == 0 { if (s != "") { print s; if (++done == n) exit } s = ""; next }
     { s = (s == "" ? $1 : s " " $1) }
     END { if (s != "" && done < n) print s }' "$test" >"$tmp/sentences.txt"
count() { grep -o '"type":' | wc -l; }
header="| layout |"
rule="|---|"
row="| entities found |"
for k in 1 2 5 10 20 40; do
    awk -v k="$k" '{ line = (line == "" ? $0 : line " " $0) }
                   NR % k == 0 { print line; line = "" }
                   END { if (line != "") print line }' "$tmp/sentences.txt" >"$tmp/joined.txt"
    found=$("$bin" "${args[@]}" "$tmp/joined.txt" | count)
    header+=" $k per line |"
    rule+="---:|"
    row+=" $found |"
done
awk '{ print } NR % 10 == 0 { print "" }' "$tmp/sentences.txt" >"$tmp/paragraphs.txt"
found=$("$bin" "${args[@]}" --paragraphs "$tmp/paragraphs.txt" | count)
echo "$header paragraphs of 10 |"
echo "$rule---:|"
echo "$row $found |"
