#!/usr/bin/env bash
# The device side of a GPU training run, from the parts benches/gpu/stage.sh made.
#
#   benches/gpu/train.sh receive [STAGE]           stash the parts carried by this call
#   benches/gpu/train.sh run OUT MINUTES [STAGE]   receive, then train for MINUTES of wall time
#
# Parts (STAGE/part.NN, checked against STAGE/SHA256SUMS) are stashed in $NER_EDGE_STASH
# (default $HOME/ner-edge-stage), outside the checkout, so that a later call on the same warm
# machine finds them. `run` needs every part; it unpacks the trainer, the f16 encoder and the
# corpus pack, then:
#
#   0. on CUDA, runs the whole-model parity tests (trainer/tests/cuda_training.rs) and stops
#      if they fail;
#   1. calibrates: a whole run of CALIB_STEPS (default 20) steps of the staged config, one
#      validation and the export included, timed;
#   2. writes the config (CONFIG with .gpu.toml for .toml, beside it) with `steps` set so that
#      the run ends inside MINUTES (start-up, two validations and the export included,
#      RESERVE_S seconds kept spare, default 60 or a fifth of the time left if less), a
#      checkpoint every fifth of the run, one stderr log line per 0.5 %;
#   3. trains it from scratch (`ner-train meta --corpora`) with `--time-limit-s` set so that
#      a run slower than planned still stops in time to validate and export, under `timeout`;
#   4. puts into OUT: the bundle in parts of at most 15,000,000 bytes (model.nerb.NN), the
#      log, the config, the trainer's output and SHA256SUMS; benches/gpu/collect.sh rebuilds
#      and checks the bundle on the other side.
#
# BACKEND (default cuda) is passed to `ner-train meta --backend`; BACKEND=cpu rehearses the
# whole script on a machine without a GPU (benches/gpu/rehearse.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?usage: benches/gpu/train.sh receive [STAGE] | run OUT MINUTES [STAGE]}
shift
stash=${NER_EDGE_STASH:-$HOME/ner-edge-stage}
mkdir -p "$stash"

receive() {
    local stage=$1 got=0 f
    if [ -f "$stage/SHA256SUMS" ]; then
        cp "$stage/SHA256SUMS" "$stash/SHA256SUMS"
    fi
    [ -f "$stash/SHA256SUMS" ] || { echo "train.sh: no SHA256SUMS carried yet ($stage/SHA256SUMS)" >&2; return 1; }
    for f in "$stage"/part.*; do
        [ -f "$f" ] || continue
        cp "$f" "$stash/" && got=$((got + 1))
    done
    local missing=()
    while read -r sum name; do
        [ "$name" = stage.tar.xz ] && continue
        if [ ! -f "$stash/$name" ]; then
            missing+=("$name")
        elif [ "$(sha256sum "$stash/$name" | cut -d' ' -f1)" != "$sum" ]; then
            echo "train.sh: $name does not match SHA256SUMS (damaged in transit); carry it again" >&2
            rm -f "$stash/$name"
            missing+=("$name")
        fi
    done <"$stash/SHA256SUMS"
    echo "train.sh: received $got part(s) in this call; stash $stash; missing: ${missing[*]:-none}"
    [ ${#missing[@]} -eq 0 ]
}

case $mode in
receive)
    receive "${1:-gpu-stage}"
    exit 0
    ;;
run) ;;
*)
    echo "train.sh: unknown mode $mode (receive or run)" >&2
    exit 2
    ;;
esac

out=${1:?usage: benches/gpu/train.sh run OUT MINUTES [STAGE]}
minutes=${2:?usage: benches/gpu/train.sh run OUT MINUTES [STAGE]}
stage=${3:-gpu-stage}
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$SECONDS
receive "$stage" || { echo "train.sh: parts missing; carry them and run again" >&2; exit 3; }

work="$stash/work"
rm -rf "$work" && mkdir -p "$work"
archive_sum=$(awk '$2 == "stage.tar.xz" { print $1 }' "$stash/SHA256SUMS")
if ! cat "$stash"/part.* | tee >(sha256sum | cut -d' ' -f1 >"$stash/archive.sum") | xz -d | tar -C "$work" -xf -; then
    echo "train.sh: unpacking the parts failed" >&2
    exit 4
fi
[ "$(cat "$stash/archive.sum")" = "$archive_sum" ] || { echo "train.sh: the reassembled archive does not match SHA256SUMS" >&2; exit 4; }
(cd "$work" && sha256sum -c --quiet CONTENTS) || { echo "train.sh: unpacked files do not match CONTENTS" >&2; exit 4; }
config=$(cat "$work/CONFIG")
[ -f "$config" ] || { echo "train.sh: $config (from the stage) is not in this checkout" >&2; exit 4; }
[ -d "$work/encoder" ] && export NER_EDGE_MINILM_DIR="$work/encoder"
echo "train.sh: staged at commit $(cat "$work/COMMIT"), checkout at $(git rev-parse HEAD 2>/dev/null || echo unknown); config $config"

for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
backend=${BACKEND:-cuda}
trainer="$work/ner-train"
log="$out/train.log"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv >>"$log" 2>&1

if [ "$backend" = cuda ]; then
    echo "== parity: trainer/tests/cuda_training.rs" >>"$log"
    if ! NER_EDGE_REQUIRE_CUDA=1 timeout 180 "$work/cuda_training" --test-threads=1 --nocapture >>"$log" 2>&1; then
        echo "train.sh: the CUDA parity tests failed; not training (see $log)" | tee -a "$log" >&2
        exit 7
    fi
fi

calib_steps=${CALIB_STEPS:-20}
derived="${config%.toml}.gpu.toml"
# Writes CONFIG into OUT with the top-level keys given as KEY=VALUE rewritten (a key the file
# lacks keeps its default).
set_keys() {
    python3 - "$@" <<'EOF'
import re, sys
config, out, *pairs = sys.argv[1:]
text = open(config).read()
for pair in pairs:
    key, value = pair.split("=", 1)
    text = re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
open(out, "w").write(text)
EOF
}
calib=$(mktemp -d)
set_keys "$config" "$derived" steps="$calib_steps" checkpoint_every=0 validate_every="$calib_steps" \
    log_every=1 || exit 5
t0=$SECONDS
echo "== calibration: $calib_steps steps, one validation, the export" >>"$log"
"$trainer" meta --config "$derived" --out "$calib" --backend "$backend" --corpora "$work/corpora.nerc" \
    --quiet >>"$log" 2>&1 || { echo "train.sh: calibration run failed (see $log)" >&2; exit 5; }
calib_s=$((SECONDS - t0))
plan=$(python3 - "$config" "$calib/log.jsonl" "$calib_s" "$calib_steps" \
    "$((minutes * 60 - (SECONDS - start)))" "${RESERVE_S:-}" <<'EOF'
import json, re, sys
config, log, calib_s, calib_steps, left, reserve = sys.argv[1:]
calib_s, calib_steps, left = float(calib_s), int(calib_steps), float(left)
reserve = float(reserve) if reserve else min(60.0, left / 5)
per_step = int(re.search(r"(?m)^episodes_per_step\s*=\s*(\d+)", open(config).read()).group(1))
rows = [json.loads(l) for l in open(log) if l.strip()]
rates = sorted(per_step / r["episodes_per_s"] for r in rows if r["step"] > 2 and r["episodes_per_s"] > 0)
if not rates:
    sys.exit("no timed steps in the calibration log")
s_step = rates[len(rates) // 2]
# Start-up, one validation and the export; the run validates twice (half-way and at the end).
overhead = max(calib_s - s_step * calib_steps, 0.0)
steps = int((left - 2 * overhead - reserve) / s_step)
if steps < 10:
    sys.exit(f"only {steps} steps fit in the {left:.0f} s left ({s_step:.3f} s/step, overhead {overhead:.0f} s)")
print(f"{steps} {s_step:.4f} {overhead:.1f}")
EOF
) || { echo "train.sh: planning failed" >&2; exit 5; }
read -r steps s_step overhead <<<"$plan"
set_keys "$config" "$derived" steps="$steps" checkpoint_every="$((steps / 5 > 0 ? steps / 5 : 1))" \
    validate_every="$((steps / 2 > 0 ? steps / 2 : 1))" log_every="$((steps / 200 > 0 ? steps / 200 : 1))" || exit 5
echo "train.sh: calibration $calib_s s for $calib_steps steps: $s_step s/step, start-up + validation + export $overhead s; training $steps steps" | tee -a "$log"
rm -rf "$calib"

run="$stash/run"
rm -rf "$run"
left=$((minutes * 60 - (SECONDS - start)))
echo "== run: $steps steps, $left s left" >>"$log"
# The trainer stops by itself in time for its last validation and the export (the step
# count is a plan, the time limit the guarantee); `timeout` is the backstop.
limit=$(python3 -c "print(max($left - $overhead - 10, 1))")
timeout "$left" "$trainer" meta --config "$derived" --out "$run" --backend "$backend" \
    --corpora "$work/corpora.nerc" --time-limit-s "$limit" --quiet >>"$log" 2>&1
rc=$?
cp "$derived" "$out/config.toml"
[ -f "$run/log.jsonl" ] && cp "$run/log.jsonl" "$out/log.jsonl"
if [ $rc -ne 0 ] || [ ! -f "$run/model.nerb" ]; then
    echo "train.sh: the run ended with rc $rc and no bundle (timeout: 124); checkpoint in $run" | tee -a "$log" >&2
    exit 6
fi
(cd "$run" && split -b 15000000 -d -a 2 model.nerb "$out/model.nerb.")
(cd "$out" && sha256sum "$run/model.nerb" | sed "s|$run/||" >SHA256SUMS && sha256sum model.nerb.* >>SHA256SUMS)
echo "train.sh: done in $((SECONDS - start)) s; $(ls "$out" | tr '\n' ' ')" | tee -a "$log"
