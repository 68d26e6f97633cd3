#!/usr/bin/env bash
# One idempotent set-up for ./infllmv2 and ./test.sh on a fresh Debian 12 machine:
#   1. system tools (cmake, g++, GoogleTest, clang-format 14, the DejaVu fonts of the pictures) from Debian packages when missing (needs root);
#   2. the NuGet packages (`dotnet restore`: ONNX Runtime 1.32 managed API, native library and the
#      C/C++ headers the op library compiles against, cached in the NuGet folder);
#   3. the CLI (and with it the native op library) when any source is newer than the last build.
# The warm path is a few file-time checks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p artifacts
log() { echo "[bootstrap] $*" >&2; }

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
[[ -f /usr/include/gtest/gtest.h ]] || need+=(libgtest-dev)
command -v clang-format-14 >/dev/null || need+=(clang-format-14)  # ./test.sh checks the C++ format
command -v unzip >/dev/null || need+=(unzip)  # eng/package-test.sh reads the packages
# The pictures' font (SkiaSharp's NoDependencies native library reads /usr/share/fonts itself).
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need+=(fonts-dejavu-core)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing: ${need[*]}; install them with apt-get (needs root)"; exit 1
  fi
  log "installing ${need[*]} from Debian packages..."
  mkdir -p /var/tmp/aptcache/partial
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dir::Cache::Archives=/var/tmp/aptcache -o DPkg::Lock::Timeout=900 "${need[@]}" >/dev/null
fi
# Other platforms (tests/platforms/run.sh): the mingw-w64 (posix threads) and aarch64 cross compilers,
# wine for win-x64 and qemu-user for linux-arm64. Optional: when apt cannot install them (no root, no
# package), set-up goes on and the platform test prints a loud SKIPPED line.
cross=()
command -v x86_64-w64-mingw32-g++-posix >/dev/null || cross+=(g++-mingw-w64-x86-64-posix)
command -v aarch64-linux-gnu-g++ >/dev/null || cross+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || cross+=(qemu-user)
command -v wine >/dev/null || cross+=(wine wine64)
if ((${#cross[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "optional, for tests/platforms: ${cross[*]} missing (needs root to install); those platforms are skipped"
  else
    log "installing ${cross[*]} from Debian packages (win-x64 and linux-arm64 builds and tests)..."
    mkdir -p /var/tmp/aptcache/partial
    { apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dir::Cache::Archives=/var/tmp/aptcache -o DPkg::Lock::Timeout=900 "${cross[@]}" >/dev/null; } ||
      log "WARNING: could not install ${cross[*]}; tests/platforms will skip what they need"
  fi
fi
command -v dotnet >/dev/null || { log "the .NET 10 SDK is required (dotnet not on PATH)"; exit 1; }

stamp="$root/artifacts/cli/.built"
if [[ -f "$stamp" ]] && [[ -z "$(find customop src graphtools eng models Directory.*.props \
      -newer "$stamp" -type f -not -path '*/bin/*' -not -path '*/obj/*' -print -quit 2>/dev/null)" ]]; then
  exit 0
fi
# Restore first: the op library's CMake build reads the ONNX Runtime headers from the restored package.
log "restoring NuGet packages (ONNX Runtime and the rest; cached after the first run)..."
dotnet restore InfLlmV2.Onnx.sln -nologo -v q >artifacts/restore.log 2>&1 || { cat artifacts/restore.log >&2; exit 1; }
log "building the infllmv2 CLI and the native op library (Release)..."
dotnet build src/InfLlmV2.Onnx.Cli/InfLlmV2.Onnx.Cli.csproj -c Release -o artifacts/cli -nologo -v q --no-restore \
  -p:GenerateFullPaths=true >artifacts/cli-build.log 2>&1 || { cat artifacts/cli-build.log >&2; exit 1; }
touch "$stamp"
