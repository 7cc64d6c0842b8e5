#!/usr/bin/env bash
# The Python binding against the CLI, release builds, same file, same run (issue 19):
# one thread (Python `inference` vs `ner-edge predict --threads 1`, one core) and Dask on two
# workers vs `ner-edge predict --threads 2`; the table and method are printed by
# benches/scripts/python_speed.py.
#
# usage: benches/scripts/python_speed.sh [INPUT]
#   INPUT  one text per line; default: the CoNLL-2003 test sentences as plain text (words
#          joined by single spaces, -DOCSTART- dropped; 3,453 lines, 46,435 words) from
#          ../shared/data, else 3,000 `ner-tools gen-text` sentences
# env: NER_EDGE_PY_BENCH_VENV  venv (default ${NER_EDGE_CACHE:-~/.cache/ner-edge}/py-bench-venv;
#                              created from bindings/python/requirements-ci.txt when missing)
#      ROUNDS                  rounds per contender, alternating; best kept (default 3)
#      CORE                    the core of the one-thread runs (default 1)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${NER_EDGE_CACHE:-$HOME/.cache/ner-edge}/target}
venv=${NER_EDGE_PY_BENCH_VENV:-${NER_EDGE_CACHE:-$HOME/.cache/ner-edge}/py-bench-venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r bindings/python/requirements-ci.txt
fi
cargo build --release -q -p ner-edge
"$venv/bin/maturin" build --release --strip -m bindings/python/Cargo.toml \
    -i "$venv/bin/python" --out "$work/wheel" >/dev/null
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps "$work"/wheel/ner_edge-*.whl

input=${1:-}
if [ -z "$input" ]; then
    input="$work/input.txt"
    conll="$repo/../shared/data/conll2003/test.txt"
    if [ -f "$conll" ]; then
        awk '/^-DOCSTART-/ {next}
             /^[[:space:]]*$/ { if (s != "") print s; s = ""; next }
             { s = (s == "" ? $1 : s " " $1) }
             END { if (s != "") print s }' "$conll" >"$input"
    else
        cargo build --release -q -p ner-edge-tools
        "$CARGO_TARGET_DIR/release/ner-tools" gen-text --sentences 3000 --seed 1 --out "$input"
    fi
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
"$venv/bin/python" benches/scripts/python_speed.py "$CARGO_TARGET_DIR/release/ner-edge" \
    "$input" "${ROUNDS:-3}" "${CORE:-1}"
