#!/usr/bin/env bash
# Every GPU check of issue 15 in one call, for a lent GPU machine (the device tool; CI never has one):
#   1. builds with ninja (Release, the CUDA build that CMake picks when the torch wheel carries CUDA and nvcc is
#      there) into build-gpu/;
#   2. runs the unit tests (CTest) on that build: the tests with a CUDA path (those guarded by
#      torch::cuda::is_available()) run it there;
#   3. 20 timed steps of IOMM-B at its real size (10 double + 20 single blocks, width 1536) at 512², with fp32 master
#      weights under bf16 autocast and activation checkpointing of every block, conditioned by a random-weight
#      InternVL3-2B-shaped MLLM and FLUX-VAE-shaped autoencoder (bench/peer/make_checkpoints.py --preset iomm-b);
#   4. prints samples/s, peak memory and MFU against the H100/H200 dense bf16 peak (989 TFLOP/s), beside the memory
#      estimate (train/memory_estimate.h) for the same run, and writes everything under $OUT (or gpu-check/).
#
#   scripts/gpu_check.sh [--batch B] [--steps N] [--skip-build] [--skip-tests]
#
# The machine reaches nothing outside it: torch (with CUDA), cmake, ninja and the -dev packages must already be
# there; the script says which one is missing instead of trying to install it. Record the result, dated, in
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BATCH=8 STEPS=20 BUILD=1 TESTS=1
while (($#)); do
  case "$1" in
    --batch) BATCH=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --skip-build) BUILD=0 ;;
    --skip-tests) TESTS=0 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

need() { command -v "$1" >/dev/null || { echo "gpu_check: $1 is not installed on this machine ($2)" >&2; exit 1; }; }
need nvidia-smi "no NVIDIA driver: this is not a GPU machine"
need cmake "apt install cmake"
need ninja "apt install ninja-build"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 1)' \
  | tee -a "$OUT/gpu.txt" || { echo "gpu_check: torch has no usable CUDA here (pip install the CUDA torch wheel of requirements-dev.txt)" >&2; exit 1; }

t0=$(date +%s)
if ((BUILD)); then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release 2>&1 | tee "$OUT/configure.log" | tail -3
  grep -qi "cuda" "$OUT/configure.log" || echo "gpu_check: warning: the configure log does not mention CUDA" >&2
  cmake --build build-gpu -j "$(nproc)" 2>&1 | tail -2
  echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
fi
IOMM=$PWD/build-gpu/iomm

if ((TESTS)); then
  t1=$(date +%s)
  ctest --test-dir build-gpu -j "$(nproc)" --output-on-failure >"$OUT/ctest.log" 2>&1 || true
  tail -4 "$OUT/ctest.log" | tee -a "$OUT/summary.txt"
  echo "unit tests: $(( $(date +%s) - t1 )) s" | tee -a "$OUT/summary.txt"
fi

W=$(mktemp -d)
$PY bench/peer/make_checkpoints.py --preset iomm-b --out "$W" >/dev/null
SETS=(--set "model.mllm=\"$W/mllm\"" --set "model.autoencoder=\"$W/vae\"" --set 'model.dtype="float32"'
      --set 'train.autocast="bfloat16"' --set train.activation_checkpointing=1 --set "train.batch_size=$BATCH")
"$IOMM" inspect --config configs/model/iomm-b.toml --memory --resolution 512 --batch "$BATCH" | tail -1 \
  | tee -a "$OUT/summary.txt"
"$IOMM" bench train --config bench/configs/iomm-b.toml "${SETS[@]}" --warmup 2 --steps "$STEPS" --json \
  >"$OUT/bench_train.json" 2>"$OUT/bench_train.log" || { tail -20 "$OUT/bench_train.log" >&2; exit 1; }
grep -i "memory estimate" "$OUT/bench_train.log" | tail -1 | tee -a "$OUT/summary.txt" || true
$PY - "$OUT/bench_train.json" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
keys = [k for k in r if any(s in k for s in ("samples", "mfu", "peak", "memory", "tflop", "step"))]
print("IOMM-B 512², bf16 autocast, checkpointing every block: " + ", ".join(f"{k}={r[k]}" for k in keys))
EOF
echo "gpu_check: total $(( $(date +%s) - t0 )) s; results in $OUT"
