#!/usr/bin/env bash
# Release builds of the op library for every runtime identifier this toolchain can make:
#   artifacts/natives/linux-x64/libinfllmv2_ops.so    the host build (g++; CUDA kernels when nvcc is found)
#   artifacts/natives/win-x64/infllmv2_ops.dll        mingw-w64 (posix threads), static, CPU only
#   artifacts/natives/linux-arm64/libinfllmv2_ops.so  aarch64-linux-gnu-g++, NEON microkernels, CPU only
# Usage: eng/build-natives.sh [--rid RID]... [--with-host]
#   --rid RID     build only these (repeatable; default: all three)
#   --with-host   also build tests/platforms' test host for each RID, and for the cross RIDs the
#                 microkernel tests (GoogleTest from /usr/src/googletest) (tests/platforms/run.sh)
# Build folders: artifacts/natives-build/<rid> (CMake's incremental build: a no-op when up to date;
# a library is copied to artifacts/natives/<rid>/ only when it changed). linux-x64 (without
# --with-host) builds in the .NET build's own folder, artifacts/native, configured as
# src/InfLlmV2.Onnx/InfLlmV2.Onnx.csproj does: one build of the host library and its CUDA kernels
# (nvcc takes minutes), not two.
# Exits non-zero, naming what is missing, when a requested RID cannot be built (the others are
# still built).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rids=()
with_host=OFF
while (($#)); do
  case "$1" in
    --rid)
      [[ $# -ge 2 ]] || { echo "build-natives: --rid needs a value (linux-x64, win-x64, linux-arm64)" >&2; exit 2; }
      rids+=("$2")
      shift 2
      ;;
    --with-host) with_host=ON; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-natives: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
((${#rids[@]})) || rids=(linux-x64 win-x64 linux-arm64)

# RID -> compiler, Debian package, toolchain file (none: the host compiler), library name.
compiler_of() {
  case "$1" in
    linux-x64) echo g++ ;;
    win-x64) echo x86_64-w64-mingw32-g++-posix ;;
    linux-arm64) echo aarch64-linux-gnu-g++ ;;
  esac
}
package_of() {
  case "$1" in
    linux-x64) echo g++ ;;
    win-x64) echo g++-mingw-w64-x86-64-posix ;;
    linux-arm64) echo g++-aarch64-linux-gnu ;;
  esac
}
toolchain_of() {
  case "$1" in
    win-x64) echo "$root/eng/toolchains/mingw-w64-x86_64.cmake" ;;
    linux-arm64) echo "$root/eng/toolchains/aarch64-linux-gnu.cmake" ;;
  esac
}
library_of() {
  case "$1" in
    win-x64) echo infllmv2_ops.dll ;;
    *) echo libinfllmv2_ops.so ;;
  esac
}

failed=()
for rid in "${rids[@]}"; do
  case "$rid" in
    linux-x64 | win-x64 | linux-arm64) ;;
    *) echo "build-natives: unknown RID '$rid' (linux-x64, win-x64, linux-arm64; osx-arm64 is not built here)" >&2
       failed+=("$rid"); continue ;;
  esac
  cxx="$(compiler_of "$rid")"
  if ! command -v "$cxx" >/dev/null; then
    echo "build-natives: cannot build $rid: the compiler $cxx is not installed (Debian package $(package_of "$rid"); eng/bootstrap.sh installs it as root)" >&2
    failed+=("$rid"); continue
  fi
  if [[ "$rid" == linux-x64 && "$(uname -m)" != x86_64 ]]; then
    echo "build-natives: cannot build linux-x64 on a $(uname -m) machine (it is the host build)" >&2
    failed+=("$rid"); continue
  fi
  build="artifacts/natives-build/$rid"
  log="artifacts/natives-build/$rid.log"
  mkdir -p "artifacts/natives-build" "artifacts/natives/$rid"
  if [[ "$rid" == linux-x64 && "$with_host" == OFF ]]; then
    # The .NET build's folder and arguments (InfLlmV2.Onnx.csproj, target BuildNativeOps).
    build="artifacts/native"
    args=(-S customop -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFLLMV2_SANITIZE=OFF -DINFLLMV2_TSAN=OFF)
  else
    args=(-S customop -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFLLMV2_SANITIZE=OFF -DINFLLMV2_TSAN=OFF
          -DINFLLMV2_TESTS=OFF)
  fi
  mkdir -p "$build"
  [[ "$with_host" == OFF ]] || args+=(-DINFLLMV2_PLATFORM_HOST=ON)
  toolchain="$(toolchain_of "$rid")"
  [[ -z "$toolchain" ]] || args+=("-DCMAKE_TOOLCHAIN_FILE=$toolchain")
  targets=(infllmv2_ops)
  [[ "$with_host" == OFF ]] || targets+=(infllmv2_platform_host)
  # Cross builds with the host: the microkernel tests too (tests/platforms/CMakeLists.txt).
  [[ "$with_host" == OFF || -z "$toolchain" || ! -f /usr/src/googletest/CMakeLists.txt ]] ||
    targets+=(infllmv2_microkernel_tests)
  # Configure once (and once more when the test host is first asked for: it stays configured);
  # later builds re-run CMake only when its inputs changed.
  if [[ ! -f "$build/CMakeCache.txt" ]] ||
    { [[ "$with_host" == ON ]] && ! grep -q "^INFLLMV2_PLATFORM_HOST:BOOL=ON\$" "$build/CMakeCache.txt"; }; then
    if ! cmake "${args[@]}" >"$log" 2>&1; then
      cat "$log" >&2
      echo "build-natives: configuring $rid failed (log: $log)" >&2
      failed+=("$rid"); continue
    fi
  fi
  if ! cmake --build "$build" --target "${targets[@]}" -j 2 >>"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build-natives: building $rid failed (log: $log)" >&2
    failed+=("$rid"); continue
  fi
  lib="$(library_of "$rid")"
  cmp -s "$build/$lib" "artifacts/natives/$rid/$lib" || cp -p "$build/$lib" "artifacts/natives/$rid/$lib"
  echo "build-natives: $rid -> artifacts/natives/$rid/$lib" >&2
done
if ((${#failed[@]})); then
  echo "build-natives: NOT built: ${failed[*]}" >&2
  exit 1
fi
