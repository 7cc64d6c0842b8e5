#!/usr/bin/env bash
# Gradient-free vs head-tuned adaptation (`ner-edge adapt --tune-heads`) on the Hou et al. 2020
# episodes (CoNLL 1-/5-shot, OntoNotes 1-shot), one bundle, same episodes, one run.
#
# Usage: benches/scripts/head_tune_quality.sh BUNDLE [OUT_DIR] [STEPS]
#   BUNDLE: a bundle not trained on CoNLL-2003 or OntoNotes (config (b), configs/cross-domain.toml)
#   STEPS:  head-tuning steps per episode (default: 10, the value chosen on Few-NERD dev episodes)
# Writes one Markdown report per run into OUT_DIR and prints a summary table.
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:?usage: $0 BUNDLE [OUT_DIR] [STEPS]}
out=${2:-target/bench-out/head-tune}
steps=${3:-10}
data=../shared/data/hou2020_fewshot_ner
if [ ! -d "$data" ]; then
    echo "skipped: $data is absent" >&2
    exit 0
fi
mkdir -p "$out"
cargo build --release -q -p ner-edge-tools
tools=${CARGO_TARGET_DIR:-target}/release/ner-tools
echo "| episodes | mode | micro P / R / F1 (%) | per-episode F1 (%) | time (s) |"
echo "|---|---|---|---|---:|"
for spec in "1shot/news_conll.json:1:CoNLL 1-shot" "5shot/news_conll.json:5:CoNLL 5-shot" \
            "1shot/mixed_ontonotes.json:1:OntoNotes 1-shot"; do
    IFS=: read -r file shots label <<<"$spec"
    for mode in gradient-free head-tune; do
        name="$(basename "$file" .json)-${shots}shot-$mode"
        args=(--mode "$mode")
        [ "$mode" = head-tune ] && args+=(--tune-steps "$steps")
        start=$(date +%s.%N)
        "$tools" eval episodes --bundle "$bundle" --episodes "$data/$file" --shots "$shots" \
            --threads 2 "${args[@]}" --report "$out/$name.md" --name "$name"
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        prf=$(grep -m1 "micro precision / recall / F1" "$out/$name.md" | cut -d'|' -f3 | tr -d ' *')
        ep=$(grep -m1 "per-episode F1" "$out/$name.md" | cut -d'|' -f3 | sed 's/ (.*//; s/^ *//')
        printf '| %s | %s | %s | %s | %.0f |\n' "$label" "$mode" "$prf" "$ep" "$secs"
    done
done
