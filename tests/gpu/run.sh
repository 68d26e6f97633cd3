#!/usr/bin/env bash
# The GPU check of the op's CUDA kernels, in two modes sized for short GPU windows (each meant to
# finish in under 480 s on an H100 including its build; not yet timed on one):
#   check  correctness of the C ABI (capi.cu) against a torch reference (run.py --check), then the
#          C++ driver (driver.cc: fragment layouts on the hardware, determinism, a decode step as a
#          CUDA graph) alone and under compute-sanitizer memcheck, racecheck and synccheck;
#   bench  timings (run.py --bench): ours per stage, SDPA with enable_gqa=True, HBM shares of the
#          device's peak and of a measured device-to-device copy.
# Results: text and JSON under $OUT when it is set (gpu-<mode>.txt, gpu-<mode>*.json).
# --dry-run: no GPU, no torch: the host half of the C ABI and the plans; check also builds the
# driver against the host emulation and runs it. ./test.sh runs both dry runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
op="$here/../../customop"
build="${INFLLMV2_GPU_BUILD:-$here/build}"
usage() { echo "usage: $0 check|bench [--dry-run]" >&2; exit 2; }
mode="${1:-}"
[[ $mode == check || $mode == bench ]] || usage
shift
dry=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    *) usage ;;
  esac
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="${OUT:-}"
if [[ -n $out ]]; then
  mkdir -p "$out"
  exec > >(tee "$out/gpu-$mode.txt") 2>&1
fi
json() { echo "${out:-$tmp}/gpu-$mode$1.json"; }
start=$SECONDS

if [[ $dry == 1 ]]; then
  # The host half of the C ABI (sizes, entry plans, split counts) built alone by the host compiler.
  flags=(-std=c++17 -Wall -Wextra -Werror -Wno-unused-parameter -I"$op/src" -I"$op/include" -I"$here")
  c++ "${flags[@]}" -O1 -shared -fPIC "$here/capi_plan.cc" "$op/src/common/check_inputs.cc" -o "$tmp/libinfllmv2_plan.so"
  py=(python3 "$here/run.py" --lib "$tmp/libinfllmv2_plan.so" --dry-run --json "$(json "")")
  if [[ $mode == check ]]; then
    "${py[@]}" --check
    # The driver against the host emulation: the same source, the kernels on emulated threads.
    c++ "${flags[@]}" -O1 -pthread "$here/driver.cc" "$here/capi_plan.cc" "$op/src/common/check_inputs.cc" \
      "$op/src/cuda/emu/emulator.cc" "$op/src/cuda/emu/kernels_emu.cc" -o "$tmp/driver"
    "$tmp/driver" "$(json -driver)"
  else
    "${py[@]}" --bench
  fi
  echo "run.sh $mode dry run: ok ($((SECONDS - start)) s)"
  exit 0
fi

command -v nvcc >/dev/null || { echo "nvcc not found" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
targets=(infllmv2_gpu)
[[ $mode == check ]] && targets+=(infllmv2_gpu_driver)
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
timeout 180 cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" 2>&1 | grep -E "error|spill" || true
[[ -f "$build/libinfllmv2_gpu.so" ]] || { echo "build failed" >&2; exit 1; }
echo "== build: $((SECONDS - start)) s"
py=(python3 "$here/run.py" --lib "$build/libinfllmv2_gpu.so" --json "$(json "")")
status=0
if [[ $mode == check ]]; then
  echo "== cases against the torch reference"
  timeout 130 "${py[@]}" --check || status=1
  echo "== driver"
  timeout 30 "$build/infllmv2_gpu_driver" "$(json -driver)" || status=1
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      echo "== compute-sanitizer $tool (driver)"
      timeout 45 compute-sanitizer --tool "$tool" --error-exitcode 3 "$build/infllmv2_gpu_driver" \
        "$(json "-$tool")" 2>&1 | tail -8 || status=1
    done
  else
    echo "compute-sanitizer not found: skipped"
    status=1
  fi
else
  echo "== bench"
  timeout 240 "${py[@]}" --bench --budget-s 200 || status=1
fi
echo "== total $((SECONDS - start)) s, status $status"
exit $status
