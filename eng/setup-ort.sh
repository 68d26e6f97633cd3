#!/usr/bin/env bash
# Fetches the official ONNX Runtime 1.29.0 release (Linux x64 native library, C/C++ headers and the
# managed C# API sources) from the npm registry, verifies its sha256 and extracts only what we use
# into .cache/ort (git-ignored). Idempotent: does nothing when .cache/ort/.complete exists.
#
# Why npm: the NuGet mirror on our machines has no ONNX Runtime package (docs/toolchain.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache"
dest="$cache/ort"
pkg="com.github.asus4.onnxruntime"
ver="0.4.9"                       # = ONNX Runtime 1.29.0
sha="e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
tgz="$cache/downloads/$pkg-$ver.tgz"
hdr="package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers"

if [[ -f "$dest/.complete" ]]; then exit 0; fi

mkdir -p "$cache/downloads"
if [[ ! -f "$tgz" ]] || ! echo "$sha  $tgz" | sha256sum -c --status; then
  echo "[setup-ort] downloading $pkg@$ver from the npm registry (150 MB)..." >&2
  rm -f "$tgz"
  command -v npm >/dev/null || { echo "[setup-ort] error: npm not found (apt-get install nodejs npm)" >&2; exit 1; }
  (cd "$cache/downloads" && npm pack --silent "$pkg@$ver" >/dev/null)
fi
if ! echo "$sha  $tgz" | sha256sum -c --status; then
  echo "[setup-ort] error: sha256 mismatch for $tgz (expected $sha); deleting it" >&2
  rm -f "$tgz"; exit 1
fi

tmp="$(mktemp -d "$cache/ort.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# GNU tar wildcards match across '/', so Runtime/*.cs also brings Runtime/Tensors/*.cs.
tar xzf "$tgz" -C "$tmp" --wildcards \
  "package/Plugins/Linux/x64/libonnxruntime.so" "$hdr/*.h" "package/Runtime/*.cs"

mkdir -p "$tmp/out/lib" "$tmp/out/include" "$tmp/out/csharp"
mv "$tmp/package/Plugins/Linux/x64/libonnxruntime.so" "$tmp/out/lib/"
mv "$tmp/$hdr/"*.h "$tmp/out/include/"
cp -r "$tmp/package/Runtime/." "$tmp/out/csharp/"
grep -q "ORT_API_VERSION 29" "$tmp/out/include/onnxruntime_c_api.h" || {
  echo "[setup-ort] error: headers are not ORT_API_VERSION 29" >&2; exit 1; }
echo "1.29.0" > "$tmp/out/VERSION"
touch "$tmp/out/.complete"
rm -rf "$dest"
mv "$tmp/out" "$dest"
echo "[setup-ort] ONNX Runtime 1.29.0 ready in $dest" >&2
