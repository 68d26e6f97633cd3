#!/usr/bin/env bash
# SASS checks of the op's CUDA kernels for sm_80, without a GPU (sass_check.py: the attention
# kernels on tensor cores and cp.async, no kernel with a stack or local memory, registers and
# shared memory within the occupancy kernel_traits.h assumes; a Markdown table of every kernel).
# Run by ./test.sh when nvcc is installed; skipped (exit 0) without nvcc.
#   --objects DIR  read the device objects the op's CMake build compiled under DIR (no compiling);
#                  otherwise every device source (driver per dtype, attention per dtype and head
#                  size) is compiled here to an sm_80 cubin, two at a time
#   --table FILE   also write the table to FILE
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
op="$here/../../customop"
objdir="" table=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --objects) objdir="$2"; shift 2 ;;
    --table) table="$2"; shift 2 ;;
    *) echo "usage: $0 [--objects BUILD_DIR] [--table FILE]" >&2; exit 2 ;;
  esac
done
command -v nvcc >/dev/null && command -v cuobjdump >/dev/null || { echo "sass-check: nvcc not found: skipped"; exit 0; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sources=("$op/src/cuda/attention_cuda_f16.cu" "$op/src/cuda/attention_cuda_bf16.cu" "$op"/src/cuda/instantiations/*.cu)

c++ -std=c++17 -Wall -Werror -I"$op/src" "$here/traits_probe.cc" -o "$tmp/traits_probe"
"$tmp/traits_probe" >"$tmp/traits.txt"

if [[ -n $objdir ]]; then
  mapfile -t objects < <(find "$objdir" -path '*infllmv2_cuda_kernels.dir*' -name '*.cu.o' | sort)
  if [[ ${#objects[@]} -ne ${#sources[@]} ]]; then
    echo "sass-check: ${#objects[@]} device objects under $objdir, expected ${#sources[@]} (build the infllmv2_cuda_kernels target)" >&2
    exit 1
  fi
else
  ccbin=()
  if nvcc --version | grep -q "release 11\." && command -v g++-11 >/dev/null; then ccbin=(-ccbin g++-11); fi
  export NVCC_FLAGS="-std=c++17 -arch=sm_80 -cubin -O3 -I$op/src -I$op/include ${ccbin[*]}"
  printf '%s\n' "${sources[@]}" |
    xargs -P 2 -I{} sh -c 'nvcc $NVCC_FLAGS -o "$0/$(basename "$1" .cu).cubin" "$1"' "$tmp" {}
  objects=("$tmp"/*.cubin)
fi
python3 "$here/sass_check.py" --traits "$tmp/traits.txt" ${table:+--table "$table"} "${objects[@]}"
