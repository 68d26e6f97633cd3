#!/usr/bin/env bash
# The op library on the other platforms this toolchain builds, inside ONNX Runtime's own native
# library of each (the official Microsoft.ML.OnnxRuntime package in the NuGet cache):
#   win-x64      infllmv2_ops.dll + the test host .exe (mingw-w64), run under wine
#   linux-arm64  libinfllmv2_ops.so + the test host (aarch64-linux-gnu-g++), run under qemu-aarch64
#                in a private mount namespace whose /proc/cpuinfo is an ARM one (ORT crashes at
#                start-up on the host's x86 cpuinfo; needs root for unshare -m and mount --bind)
# Builds through eng/build-natives.sh --with-host, runs the microkernel tests (every level the CPU
# has: customop/tests/test_microkernels.cc), then platform_host.cc's cases once per microkernel
# level worth telling apart (win-x64: the best level and baseline; linux-arm64: neon and
# portable). What cannot run here (no wine, no qemu, no root, no cross compiler, no ORT package) is
# reported as a loud "SKIPPED: <why>" line and exits 0; a build or test failure exits 1.
set -uo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
cd "$root"

version="$(sed -n 's:.*<OnnxRuntimeVersion>\([^<]*\)</OnnxRuntimeVersion>.*:\1:p' Directory.Packages.props)"
ort_runtimes="${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.onnxruntime/$version/runtimes"
work="$root/artifacts/platform-tests"
mkdir -p "$work"
failures=()
skips=()
start=$SECONDS

skip() {
  echo "!!!!!!!! SKIPPED: $1: $2" >&2
  skips+=("$1")
}
fail() {
  echo "FAILED: $1: $2" >&2
  failures+=("$1")
}
# Copies $1 to $2 unless it is already there (large ORT libraries: once).
stage() { cmp -s "$1" "$2" || cp "$1" "$2"; }

# The runs below set INFLLMV2_ISA or leave it unset (an empty value would mean the lowest level).
# Builds the op library and test host of a RID; false (with the skip or failure recorded) if not.
build() {
  local rid="$1" cxx="$2" package="$3"
  if ! command -v "$cxx" >/dev/null; then
    skip "$rid" "no cross compiler $cxx (Debian package $package; eng/bootstrap.sh installs it as root)"
    return 1
  fi
  if ! eng/build-natives.sh --rid "$rid" --with-host; then
    fail "$rid" "build failed (artifacts/natives-build/$rid.log)"
    return 1
  fi
}

run_win_x64() {
  local rid=win-x64
  build "$rid" x86_64-w64-mingw32-g++-posix g++-mingw-w64-x86-64-posix || return 0
  local ort="$ort_runtimes/win-x64/native/onnxruntime.dll"
  if [[ ! -f "$ort" ]]; then
    skip "$rid" "no $ort (Microsoft.ML.OnnxRuntime $version not restored: dotnet restore InfLlmV2.Onnx.sln)"
    return 0
  fi
  if ! command -v wine >/dev/null || ! command -v wineserver >/dev/null; then
    skip "$rid" "wine is not installed (Debian packages wine wine64; eng/bootstrap.sh installs them as root); built only"
    return 0
  fi
  local dir="$work/$rid"
  mkdir -p "$dir"
  stage "$ort" "$dir/onnxruntime.dll"
  stage artifacts/natives/win-x64/infllmv2_ops.dll "$dir/infllmv2_ops.dll"
  stage artifacts/natives-build/win-x64/platforms/infllmv2_platform_host.exe "$dir/infllmv2_platform_host.exe"
  # A console program needs no X display; the prefix is made once (about 10 s) and kept.
  export WINEPREFIX="${INFLLMV2_WINEPREFIX:-$HOME/.cache/infllmv2/wine-prefix}" WINEDEBUG=-all
  export WINEDLLOVERRIDES="mscoree,mshtml="
  if [[ ! -f "$WINEPREFIX/system.reg" ]]; then
    echo "[platforms] creating the wine prefix $WINEPREFIX (once)..." >&2
    mkdir -p "$WINEPREFIX"
    local t0=$SECONDS
    wineboot -i >/dev/null 2>&1
    wineserver -w
    echo "[platforms] wine prefix ready in $((SECONDS - t0)) s" >&2
  fi
  # The microkernel tests (every x86 level this CPU has) in the DLL's compiler and C runtime.
  local mk=artifacts/natives-build/win-x64/platforms/infllmv2_microkernel_tests.exe
  if [[ -f "$mk" ]]; then
    echo "-- win-x64 microkernel tests under wine --"
    stage "$mk" "$dir/infllmv2_microkernel_tests.exe"
    (cd "$dir" && wine infllmv2_microkernel_tests.exe --gtest_brief=1 2> >(grep -v "DXGI factory" >&2)) ||
      fail "$rid" "microkernel tests failed"
  fi
  local isa
  for isa in "" baseline; do
    echo "-- win-x64 under wine$([[ -z "$isa" ]] || echo ", INFLLMV2_ISA=$isa") --"
    # stderr: wine's own "Failed to create DXGI factory." is noise.
    if ! (cd "$dir" && env -u INFLLMV2_ISA ${isa:+INFLLMV2_ISA=$isa} wine infllmv2_platform_host.exe onnxruntime.dll \
      infllmv2_ops.dll 2> >(grep -v "DXGI factory" >&2)); then
      fail "$rid" "test host failed${isa:+ (INFLLMV2_ISA=$isa)}"
    fi
  done
}

run_linux_arm64() {
  local rid=linux-arm64
  build "$rid" aarch64-linux-gnu-g++ g++-aarch64-linux-gnu || return 0
  local ort="$ort_runtimes/linux-arm64/native/libonnxruntime.so"
  if [[ ! -f "$ort" ]]; then
    skip "$rid" "no $ort (Microsoft.ML.OnnxRuntime $version not restored: dotnet restore InfLlmV2.Onnx.sln)"
    return 0
  fi
  if ! command -v qemu-aarch64 >/dev/null || [[ ! -d /usr/aarch64-linux-gnu/lib ]]; then
    skip "$rid" "qemu-aarch64 or the arm64 C library is missing (Debian packages qemu-user, g++-aarch64-linux-gnu); built only"
    return 0
  fi
  if [[ $(id -u) -ne 0 ]] || ! unshare -m sh -c 'mount --bind /proc/self/status /proc/cpuinfo' 2>/dev/null; then
    skip "$rid" "needs root with unshare -m and mount --bind (an ARM /proc/cpuinfo for ORT under qemu); built only"
    return 0
  fi
  local dir="$work/$rid"
  mkdir -p "$dir"
  # What ORT's CPU detection reads under qemu: two Neoverse-N1-like cores.
  local cpu
  for cpu in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\n' "$cpu"
    printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
  done >"$dir/cpuinfo"
  local mk=artifacts/natives-build/linux-arm64/platforms/infllmv2_microkernel_tests
  if [[ -f "$mk" ]]; then
    echo "-- linux-arm64 microkernel tests (neon, portable) under qemu-aarch64 --"
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$mk" --gtest_brief=1 || fail "$rid" "microkernel tests failed"
  fi
  local isa
  for isa in "" portable; do
    echo "-- linux-arm64 under qemu-aarch64$([[ -z "$isa" ]] || echo ", INFLLMV2_ISA=$isa") --"
    if ! env -u INFLLMV2_ISA ${isa:+INFLLMV2_ISA=$isa} unshare -m sh -c \
      'mount --bind "$1" /proc/cpuinfo && shift && exec qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"' sh \
      "$dir/cpuinfo" artifacts/natives-build/linux-arm64/platforms/infllmv2_platform_host "$ort" \
      artifacts/natives/linux-arm64/libinfllmv2_ops.so; then
      fail "$rid" "test host failed${isa:+ (INFLLMV2_ISA=$isa)}"
    fi
  done
}

run_win_x64
run_linux_arm64

echo "[platforms] $((SECONDS - start)) s; failed: ${failures[*]:-none}; skipped: ${skips[*]:-none}" >&2
((${#failures[@]} == 0))
