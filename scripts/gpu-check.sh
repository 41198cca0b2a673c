#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (see README, "Checking a GPU"):
#
#   1. builds the tests and benchmarks in release (once);
#   2. runs the backend conformance suite, the fused-attention tests and the precision
#      tests on CUDA (RAE_REQUIRE_CUDA=1: a missing driver or toolkit is a failure, not a
#      skip) and on WGPU's GPU adapter (RAE_WGPU_ADAPTER=gpu);
#   3. prints one markdown table (tests/benches/gpu_check.rs): matmul 4096³ TFLOP/s in
#      fp32/tf32/bf16, DiT-DH-XL training images/s at batch 32 and 64 under tf32 and bf16,
#      DiT-DH-XL 50-step Euler sampling images/s, DINOv2-B encoding images/s, and the memory
#      pool's high-water mark of each.
#
# Needs a Rust toolchain, an NVIDIA driver, and the CUDA headers and NVRTC: a toolkit under
# /usr/local/cuda, or CUDA_PATH pointing at a folder with include/ and lib/ (the pip wheels
# nvidia-cuda-nvrtc, nvidia-cuda-runtime and nvidia-cuda-cccl installed with
# `pip install --target DIR` give one: DIR/nvidia/cu13). Budget: under 8 minutes on one
# H200 with a warm cargo cache; each phase has its own time limit and the script says
# which phase failed. Never part of CI.
#
#   scripts/gpu-check.sh            # everything
#   SKIP_TESTS=1 scripts/gpu-check.sh   # only the table
set -uo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
say() { printf '[gpu-check %4ds] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# The toolkit: CUDA_PATH, else /usr/local/cuda, else the pip wheels CI uses.
if [ -z "${CUDA_PATH:-}" ]; then
  for d in /usr/local/cuda /var/cache/rae/cuda-pip/nvidia/cu13; do
    if [ -f "$d/include/cuda.h" ] || [ -f "$d/include/cuda_runtime.h" ]; then
      export CUDA_PATH="$d"
      break
    fi
  done
fi
[ -n "${CUDA_PATH:-}" ] || fail "no CUDA headers: set CUDA_PATH (a toolkit, or the pip wheels' nvidia/cu13 folder)"
export LD_LIBRARY_PATH="$CUDA_PATH/lib:$CUDA_PATH/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
if command -v nvidia-smi >/dev/null; then
  say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
else
  say "nvidia-smi not found; the CUDA backend will say what is missing"
fi
say "CUDA_PATH=$CUDA_PATH"

say "build (release)"
timeout 420 cargo build --release -p rae-tests --tests --benches -q \
  || fail "release build (exit $?)"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  tests=(--test conformance --test attention_fused --test precision --test cuda_backend)
  say "conformance on CUDA"
  RAE_REQUIRE_CUDA=1 RAE_REQUIRE_NVRTC=1 timeout 240 \
    cargo test --release -p rae-tests "${tests[@]}" -q -- --test-threads 4 \
    || fail "conformance on CUDA (exit $?)"
  say "conformance on WGPU's GPU adapter"
  RAE_WGPU_ADAPTER=gpu RAE_REQUIRE_WGPU=1 timeout 240 \
    cargo test --release -p rae-tests "${tests[@]}" -q -- --test-threads 4 \
    || fail "conformance on WGPU's GPU adapter (exit $?)"
fi

say "measurements"
RAE_WGPU_ADAPTER=gpu timeout 300 cargo bench -p rae-tests --bench gpu_check -q \
  || fail "measurements (exit $?)"
say "done"
