#!/usr/bin/env bash
# Adaptation variants side by side on the Hou et al. 2020 episodes (CoNLL 1-/5-shot, OntoNotes
# 1-shot), one bundle, the same episodes, one run:
#   gradient-free   prototypes from the support examples (OT memory + prior MLP), the default
#   head-tune       the same, then `--tune-heads STEPS` (boundary head + type projection)
#   combined        examples plus the type descriptions of fixtures/descriptions/
#   zero-shot       the type descriptions alone (support examples only name the types)
#   head-tune+desc  combined, then `--tune-heads STEPS`
#
# Usage: benches/scripts/adaptation_quality.sh BUNDLE [OUT_DIR] [STEPS]
#   BUNDLE: a bundle not trained on CoNLL-2003 or OntoNotes (config (b), configs/cross-domain.toml)
#   STEPS:  head-tuning steps per episode (default 30, chosen on Few-NERD INTER dev episodes;
#           benches/RESULTS.md "Head tuning")
# Writes one Markdown report per run into OUT_DIR and prints a summary table.
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:?usage: $0 BUNDLE [OUT_DIR] [STEPS]}
out=${2:-target/bench-out/adaptation}
steps=${3:-30}
data=../shared/data/hou2020_fewshot_ner
if [ ! -d "$data" ]; then
    echo "skipped: $data is absent" >&2
    exit 0
fi
mkdir -p "$out"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ner-edge-tools
tools=${CARGO_TARGET_DIR:-target}/release/ner-tools
echo "| episodes | adaptation | micro P / R / F1 (%) | per-episode F1 (%) | time (s) |"
echo "|---|---|---|---|---:|"
for spec in "1shot/news_conll.json:1:CoNLL 1-shot:conll" "5shot/news_conll.json:5:CoNLL 5-shot:conll" \
            "1shot/mixed_ontonotes.json:1:OntoNotes 1-shot:ontonotes"; do
    IFS=: read -r file shots label desc <<<"$spec"
    for mode in gradient-free head-tune combined zero-shot head-tune+desc; do
        name="$(basename "$file" .json)-${shots}shot-$mode"
        case $mode in
            gradient-free) args=(--mode gradient-free) ;;
            head-tune) args=(--mode head-tune --tune-steps "$steps" --tune-lr 1e-3 --tune-l2 1) ;;
            combined) args=(--descriptions "fixtures/descriptions/$desc.txt" --use-descriptions combine) ;;
            zero-shot) args=(--descriptions "fixtures/descriptions/$desc.txt" --use-descriptions only) ;;
            head-tune+desc) args=(--mode head-tune --tune-steps "$steps" --tune-lr 1e-3 --tune-l2 1
                                  --descriptions "fixtures/descriptions/$desc.txt" --use-descriptions combine) ;;
        esac
        start=$(date +%s.%N)
        "$tools" eval episodes --bundle "$bundle" --episodes "$data/$file" --shots "$shots" \
            --threads 2 "${args[@]}" --report "$out/$name.md" --name "$name"
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        prf=$(grep -m1 "micro precision / recall / F1" "$out/$name.md" | cut -d'|' -f3 | tr -d ' *')
        ep=$(grep -m1 "per-episode F1" "$out/$name.md" | cut -d'|' -f3 | sed 's/ (.*//; s/^ *//')
        printf '| %s | %s | %s | %s | %.0f |\n' "$label" "$mode" "$prf" "$ep" "$secs"
    done
done
