#!/usr/bin/env bash
# One GPU session's checks, in order: device facts, NVRTC compile of every kernel, per-kernel
# parity against the CPU reference, whole-model CPU-vs-CUDA training parity, a short training
# run on the CUDA backend, the step benchmark (ours and PyTorch eager, same shapes), and an ncu
# profile of one step. Results go to OUT (at most 8 files).
#
#   benches/gpu/run.sh OUT [BIN]
#
# BIN holds binaries made by benches/gpu/build.sh (for machines without cargo); without it the
# script builds them first. Run from anywhere; paths are relative to the repository root.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: benches/gpu/run.sh OUT [BIN]}
mkdir -p "$out"
bin=${2:-}
if [ -z "$bin" ]; then
    bin=$(mktemp -d)
    benches/gpu/build.sh "$bin" || exit 1
fi
bin=$(cd "$bin" && pwd)

for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export NER_EDGE_REQUIRE_CUDA=1 NER_EDGE_REQUIRE_NVRTC=1
# NCCL from PyTorch's nvidia-nccl wheel (libnccl.so.2), for the --gpus ranks.
if [ -z "${NER_EDGE_NCCL_DIR:-}" ]; then
    NER_EDGE_NCCL_DIR=$(python3 -c 'import glob, nvidia, os; print(next(iter(sorted(os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "**", "libnccl.so*"), recursive=True))), ""))' 2>/dev/null)
    [ -n "$NER_EDGE_NCCL_DIR" ] && export NER_EDGE_NCCL_DIR
fi
summary="$out/summary.md"
status() { printf '| %s | %s | %s |\n' "$1" "$2" "$3" >>"$summary"; }
step() {
    local name=$1 log=$2; shift 2
    local t0=$SECONDS
    echo "== $name" >>"$log"
    timeout "${STEP_TIMEOUT:-240}" "$@" >>"$log" 2>&1
    local rc=$?
    status "$name" "$([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc)")" "$((SECONDS - t0)) s"
    return $rc
}

{
    echo "# GPU run $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -2
    python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo '```'
    echo
    echo '| step | result | time |'
    echo '|---|---|---|'
} >"$summary"

step "kernels compile (sm_80, sm_90)" "$out/parity.log" "$bin/kernels_compile" --test-threads=1
step "kernel parity vs CPU" "$out/parity.log" "$bin/cuda_parity" --test-threads=1 --nocapture
step "whole-model parity (fwd/bwd, 20 steps)" "$out/training.log" "$bin/cuda_training" --test-threads=1 --nocapture
NER_TRAIN_BIN="$bin/ner-train" step "NCCL world size 1 and 2 ranks on one GPU vs 1 rank" \
    "$out/training.log" "$bin/nccl_training" --test-threads=1 --nocapture
run_dir=$(mktemp -d)
step "ner-train meta --backend cuda (tiny)" "$out/training.log" \
    "$bin/ner-train" meta --config fixtures/train/tiny.toml --out "$run_dir" --backend cuda --quiet
step "gpu-train-step (ours, MiniLM-L6 shape)" "$out/bench.log" "$bin/gpu-train-step" 20 16
PYTHONUNBUFFERED=1 step "pytorch eager step (same shapes)" "$out/bench.log" \
    python3 tools/peers/pytorch_step.py --device cuda --steps 20 --warmup 3 --batching all \
    --json "$out/pytorch.jsonl"
PYTHONUNBUFFERED=1 step "ceilings: copy bandwidth, f32 GEMM (torch)" "$out/bench.log" python3 -c '
import torch, time
torch.backends.cuda.matmul.allow_tf32 = False
x = torch.empty(1 << 28, dtype=torch.float32, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): y.copy_(x)
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 20
print(f"ceiling copy: {2 * x.numel() * 4 / dt / 1e12:.2f} TB/s (read + write)")
a = torch.randn(8192, 8192, device="cuda"); b = torch.randn(8192, 8192, device="cuda")
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 10
print(f"ceiling f32 GEMM (no TF32): {2 * 8192**3 / dt / 1e12:.1f} TFLOP/s")
'
if command -v ncu >/dev/null && [ "${SKIP_NCU:-0}" != 1 ]; then
    step "ncu profile of gpu-train-step" "$out/bench.log" \
        ncu --csv --page raw --launch-skip 300 --launch-count 300 \
        --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed \
        --log-file "$out/ncu.csv" "$bin/gpu-train-step" 2 16
fi
cat "$summary"
