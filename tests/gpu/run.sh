#!/usr/bin/env bash
# One command on the GPU machine (CUDA 12/13 nvcc, CMake, PyTorch): builds the op's CUDA kernels
# behind a C ABI, checks them against a torch reference, runs compute-sanitizer memcheck and
# racecheck on small shapes, and times them against SDPA (flash). About 6-8 minutes on an H200.
# --dry-run: no GPU, no torch: the script's plan, shapes and argument handling, with the sizes from
# the op's own code (the host half of the C ABI, built with the host compiler).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${INFLLMV2_GPU_BUILD:-$here/build}"
dry=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
  esac
done
py=(python3 "$here/run.py" --lib "$build/libinfllmv2_gpu.so")
if [[ $dry == 1 ]]; then
  # The host half of the C ABI (sizes, entry plans, split counts) built alone by the host compiler.
  op="$here/../../customop"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  c++ -std=c++17 -O1 -shared -fPIC -Wall -Wextra -Werror -Wno-unused-parameter -I"$op/src" -I"$op/include" \
    "$here/capi_plan.cc" "$op/src/common/check_inputs.cc" -o "$tmp/libinfllmv2_plan.so"
  py=(python3 "$here/run.py" --lib "$tmp/libinfllmv2_plan.so")
  "${py[@]}" --dry-run --check --small
  "${py[@]}" --dry-run --check --bench
  echo "run.sh dry run: ok"
  exit 0
fi
command -v nvcc >/dev/null || { echo "nvcc not found" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
start=$SECONDS
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" 2>&1 | grep -E "error|registers|spill|Compiling entry" || true
[[ -f "$build/libinfllmv2_gpu.so" ]] || { echo "build failed" >&2; exit 1; }
echo "== build: $((SECONDS - start)) s"
status=0
echo "== check"
timeout 180 "${py[@]}" --check || status=1
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool (small shapes)"
    timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 3 --target-processes all \
      "${py[@]}" --check --small 2>&1 | tail -15 || status=1
  done
else
  echo "compute-sanitizer not found: skipped"
fi
echo "== bench (vs SDPA flash)"
timeout 330 "${py[@]}" --bench --budget-s 240 || status=1
echo "== total $((SECONDS - start)) s, status $status"
exit $status
