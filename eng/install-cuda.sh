#!/usr/bin/env bash
# Installs Debian's CUDA 11.8 toolkit (nvcc) and g++-11 (nvcc 11.8's newest supported host compiler)
# when nvcc is missing. Idempotent: a no-op when nvcc is already on PATH or in /usr/bin.
# Debian ships nvidia-cuda-toolkit in `non-free`, and it needs `contrib` (libcuda1 -> nvidia-support).
# Downloaded .debs go to a private archive folder (/var/tmp/aptcache) that is kept, so a rerun after
# a removal is fast and a concurrent apt run's cleanup hook cannot delete them mid-install.
# Set INFLLMV2_NO_CUDA=1 to skip (the emulated CUDA tests run either way).
set -euo pipefail
[[ "${INFLLMV2_NO_CUDA:-0}" == 1 ]] && { echo "install-cuda: skipped (INFLLMV2_NO_CUDA=1)"; exit 0; }
if command -v nvcc >/dev/null 2>&1 && command -v g++-11 >/dev/null 2>&1; then
  echo "install-cuda: $(nvcc --version | tail -n 2 | head -n 1)"; exit 0
fi
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
src=/etc/apt/sources.list.d/debian.sources
if [[ -f $src ]] && ! grep -q 'non-free' "$src"; then
  # Only the first stanza (the main archive) gets contrib/non-free.
  $sudo awk 'BEGIN{done=0} /^Components:/ && !done {print "Components: main contrib non-free"; done=1; next} {print}' \
    "$src" >/tmp/debian.sources.new
  $sudo cp /tmp/debian.sources.new "$src"
fi
cache=/var/tmp/aptcache
$sudo mkdir -p "$cache/partial"
$sudo apt-get update -o DPkg::Lock::Timeout=900 >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
  -o Dir::Cache::Archives="$cache" -o DPkg::Lock::Timeout=900 nvidia-cuda-toolkit g++-11 >/dev/null
echo "install-cuda: $(nvcc --version | tail -n 2 | head -n 1)"
