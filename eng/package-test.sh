#!/usr/bin/env bash
# Tests the packages as a user installs them (./test.sh runs it; docs/testing.md, docs/packages.md):
#   1. `dotnet pack` of the solution into a temporary local feed: exactly InfLlmV2.Onnx,
#      InfLlmV2.Onnx.GraphTools, the infllmv2 tool's pointer package and its RID packages
#      infllmv2.{linux-x64,linux-arm64,win-x64} (+ the two libraries' .snupkg), with the expected files:
#      the op library of every RID (runtimes/RID/native/ of InfLlmV2.Onnx; in each tool package, its
#      RID's next to the program and the others' under runtimes/RID/native/, the same bytes), the DLL a
#      PE32+ x86-64 DLL, the .so files ELF x86-64 / AArch64 shared objects;
#   2. the packed Linux op libraries (linux-x64, linux-arm64): Release builds (no sanitizer runtime),
#      NEEDED entries within glibc/libstdc++/libgcc (no libcudart: the CUDA runtime is linked
#      statically), symbol versions within Debian 12's (glibc 2.36, GCC 12), RegisterCustomOps the only
#      export, and the CUDA kernels inside the linux-x64 one when nvcc is installed;
#   3. the tool: `dotnet tool install infllmv2 --tool-path T --add-source FEED --version V` (the
#      pointer package, which installs infllmv2.linux-x64 here), then `infllmv2 version`, `infllmv2 demo`
#      (generates the default model into the tool's folder), `infllmv2 rewrite` of that model, and
#      `rewrite --genai-folder --target-os windows` (the win-x64 op library from the tool's package);
#   4. a fresh console app in a temporary folder (`dotnet new console`, no project reference, no
#      repository path) adds InfLlmV2.Onnx from the feed and Microsoft.ML.OnnxRuntime (CPU) from
#      the NuGet feed, rewrites the model with InfLlmV2.Onnx.GraphTools (byte-identical to the
#      tool's rewrite), runs it with RegisterInfLlmV2Ops() (its op library must come from the app's
#      own folder), once with `dotnet run` and once from `dotnet publish -r linux-x64`, and the
#      tool's `infllmv2 run` reproduces its logits (--atol 1e-6); the app tokenizes through ONNX Runtime
#      Extensions (the library's dependency: its native library must come from the app's own folder).
#
# Stale copies: every run packs a unique prerelease version (PackageVersion=<Version>-pkgtest.<time>.<pid>;
# the assemblies keep <Version>), so no NuGet cache can hold it and restore must take our packages from
# this run's feed; ONNX Runtime and the rest still come from the shared cache. The global-packages
# folders of that version are deleted on exit. (Clearing ~/.nuget/packages/<our ids> instead would race
# with a concurrent run and silently reuse a stale copy when the clearing is skipped.)
#
# Pack runs eng/build-natives.sh (eng/natives.targets) for the RIDs' op libraries in artifacts/natives/;
# BuildNatives=false in the environment packs the files already there instead.
#
# PACKAGE_TEST_PLANT=no-native|no-win-native|dynamic-cudart|sanitized plants a broken package after
# packing (the linux-x64 op library removed; the win-x64 DLL removed; relinked against the shared CUDA
# runtime; replaced by the ASan build of artifacts/native-tests): the test must then fail. KEEP=1 keeps
# the temporary folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS
log() { echo "[package-test $((SECONDS - start))s] $*"; }
# Checks of the packages' contents record a problem and go on (so that a broken package also shows
# what the tool and the app then do); any problem fails the test at the end. Other failures stop it.
problems=()
problem() { echo "[package-test] PROBLEM: $*" >&2; problems+=("$*"); }
fail() {
  echo "[package-test] FAIL: $*" >&2
  ((${#problems[@]} == 0)) || printf '[package-test] also: %s\n' "${problems[@]}" >&2
  exit 1
}

base_version=$(sed -n 's|.*<Version>\(.*\)</Version>.*|\1|p' Directory.Build.props | head -n 1)
ort_version=$(sed -n 's|.*<OnnxRuntimeVersion>\(.*\)</OnnxRuntimeVersion>.*|\1|p' Directory.Packages.props | head -n 1)
[[ -n $base_version && -n $ort_version ]] || fail "cannot read Version / OnnxRuntimeVersion"
version="$base_version-pkgtest.$(date -u +%Y%m%d%H%M%S).$$"
tmp=$(mktemp -d /tmp/infllmv2-package-test.XXXXXX)
feed=$tmp/feed tools=$tmp/tools app=$tmp/app work=$tmp/work
mkdir -p "$feed" "$work"
packages_dir=$(dotnet nuget locals global-packages --list | sed -n 's|^global-packages: *||p')
cleanup() {
  local v=${version,,}
  for id in infllmv2.onnx infllmv2.onnx.graphtools infllmv2 infllmv2.linux-x64 infllmv2.linux-arm64 infllmv2.win-x64; do
    if [[ -n $packages_dir && -d $packages_dir/$id/$v ]]; then rm -rf "${packages_dir:?}/$id/$v"; fi
  done
  if [[ ${KEEP:-0} == 1 ]]; then echo "[package-test] kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# ---- 1. pack ------------------------------------------------------------------------------------
log "dotnet pack InfLlmV2.Onnx.sln (version $version) -> $feed"
dotnet pack InfLlmV2.Onnx.sln -c Release -o "$feed" -nologo -v q -p:PackageVersion="$version" \
  >"$tmp/pack.log" 2>&1 || { cat "$tmp/pack.log"; fail "dotnet pack"; }
expected="InfLlmV2.Onnx.$version.nupkg
InfLlmV2.Onnx.$version.snupkg
InfLlmV2.Onnx.GraphTools.$version.nupkg
InfLlmV2.Onnx.GraphTools.$version.snupkg
infllmv2.$version.nupkg
infllmv2.linux-arm64.$version.nupkg
infllmv2.linux-x64.$version.nupkg
infllmv2.win-x64.$version.nupkg"
got=$(cd "$feed" && ls | LC_ALL=C sort -f)
[[ "$got" == "$(LC_ALL=C sort -f <<<"$expected")" ]] || fail "the solution packed:
$got
expected:
$expected"
lib_pkg=$feed/InfLlmV2.Onnx.$version.nupkg
tool_pkg=$feed/infllmv2.$version.nupkg
tool_rids=(linux-x64 linux-arm64 win-x64)
op_file() { [[ $1 == win-* ]] && echo infllmv2_ops.dll || echo libinfllmv2_ops.so; }

case "${PACKAGE_TEST_PLANT:-}" in
  "") ;;
  no-native)
    log "PLANTED: the op library removed from InfLlmV2.Onnx"
    zip -q -d "$lib_pkg" runtimes/linux-x64/native/libinfllmv2_ops.so ;;
  no-win-native)
    log "PLANTED: the win-x64 op library removed from InfLlmV2.Onnx"
    zip -q -d "$lib_pkg" runtimes/win-x64/native/infllmv2_ops.dll ;;
  dynamic-cudart|sanitized)
    mkdir -p "$tmp/plant/runtimes/linux-x64/native"
    planted=$tmp/plant/runtimes/linux-x64/native/libinfllmv2_ops.so
    if [[ $PACKAGE_TEST_PLANT == sanitized ]]; then
      [[ -f artifacts/native-tests/libinfllmv2_ops.so ]] || fail "plant needs the ASan build (run ./test.sh's native tests first)"
      cp artifacts/native-tests/libinfllmv2_ops.so "$planted"
    else
      # The release library relinked with the shared CUDA runtime added (what a build without
      # CUDA_RUNTIME_LIBRARY Static would need).
      (cd artifacts/native && eval "$(sed "s| -o libinfllmv2_ops.so | -o $planted |" CMakeFiles/infllmv2_ops.dir/link.txt) -Wl,--no-as-needed -lcudart")
    fi
    log "PLANTED: $PACKAGE_TEST_PLANT op library in InfLlmV2.Onnx"
    (cd "$tmp/plant" && zip -q "$lib_pkg" runtimes/linux-x64/native/libinfllmv2_ops.so) ;;
  *) fail "unknown PACKAGE_TEST_PLANT=$PACKAGE_TEST_PLANT" ;;
esac

# Expected contents (docs/packages.md lists them).
list() { unzip -Z1 "$1" | grep -v -E '^(_rels/|\[Content_Types\]|package/services/)' | LC_ALL=C sort; }
lib_files=$(list "$lib_pkg")
for f in InfLlmV2.Onnx.nuspec README.md lib/net10.0/InfLlmV2.Onnx.dll lib/net10.0/InfLlmV2.Onnx.xml \
         runtimes/linux-x64/native/libinfllmv2_ops.so runtimes/linux-arm64/native/libinfllmv2_ops.so \
         runtimes/win-x64/native/infllmv2_ops.dll; do
  grep -qx "$f" <<<"$lib_files" || problem "InfLlmV2.Onnx lacks $f; it has:
$lib_files"
done
natives_in_lib=$(grep '^runtimes/' <<<"$lib_files" || true)
[[ $natives_in_lib == "$(printf 'runtimes/%s/native/%s\n' linux-arm64 libinfllmv2_ops.so linux-x64 libinfllmv2_ops.so win-x64 infllmv2_ops.dll)" ]] \
  || problem "InfLlmV2.Onnx's native files are not exactly the three RIDs' op libraries; it has:
$natives_in_lib"

# The file formats: a PE32+ x86-64 DLL ('MZ', at e_lfanew 'PE\0\0', machine 0x8664, optional header
# magic 0x20b, the DLL characteristic 0x2000); ELF shared objects of the RID's machine.
u16() { od -An -tu2 -j "$2" -N 2 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N 4 "$1" | tr -d ' '; }
pe_x64_dll() {  # prints why $1 is not a PE32+ x86-64 DLL, nothing when it is
  local f=$1 pe
  [[ -s $f ]] || { echo "empty or missing"; return; }
  [[ $(head -c 2 "$f") == MZ ]] || { echo "no MZ header"; return; }
  pe=$(u32 "$f" 60)
  [[ -n $pe && $(od -An -c -j "$pe" -N 4 "$f" | tr -d ' ') == 'PE\0\0' ]] || { echo "no PE signature"; return; }
  (($(u16 "$f" $((pe + 4))) == 0x8664)) || { echo "machine $(printf 0x%x "$(u16 "$f" $((pe + 4)))"), not x86-64 (0x8664)"; return; }
  (($(u16 "$f" $((pe + 24))) == 0x20b)) || { echo "not PE32+"; return; }
  (($(u16 "$f" $((pe + 22))) & 0x2000)) || echo "not a DLL (an executable image)"
}
elf_machine() {  # prints why $1 is not an ELF shared object for machine $2 (readelf's name), nothing when it is
  local header
  header=$(readelf -h "$1" 2>&1) || { echo "not an ELF file"; return; }
  grep -q "Type: *DYN" <<<"$header" || { echo "not a shared object"; return; }
  grep -q "Machine: *$2\$" <<<"$header" || echo "machine $(sed -n 's|.*Machine: *||p' <<<"$header"), not $2"
}
check_format() {  # $1: label, $2: file, $3: RID
  local why
  case $3 in
    win-x64) why=$(pe_x64_dll "$2") ;;
    linux-x64) why=$(elf_machine "$2" "Advanced Micro Devices X86-64") ;;
    linux-arm64) why=$(elf_machine "$2" AArch64) ;;
  esac
  [[ -z $why ]] || problem "$1: $why"
}
mkdir -p "$tmp/natives"
for rid in "${tool_rids[@]}"; do
  f=$(op_file "$rid")
  mkdir -p "$tmp/natives/$rid"
  if unzip -p "$lib_pkg" "runtimes/$rid/native/$f" >"$tmp/natives/$rid/$f" 2>/dev/null && [[ -s $tmp/natives/$rid/$f ]]; then
    check_format "InfLlmV2.Onnx runtimes/$rid/native/$f" "$tmp/natives/$rid/$f" "$rid"
  else
    rm -f "$tmp/natives/$rid/$f"
  fi
done
grep -qx 'lib/net10.0/InfLlmV2.Onnx.pdb' < <(list "$feed/InfLlmV2.Onnx.$version.snupkg") || problem "InfLlmV2.Onnx.snupkg lacks the PDB"
nuspec=$(unzip -p "$lib_pkg" InfLlmV2.Onnx.nuspec)
deps=$(grep -o '<dependency id="[^"]*" version="[^"]*"' <<<"$nuspec" | sed 's|<dependency id="\([^"]*\)" version="\([^"]*\)"|\1 \2|' | sort)
pkg_version() { sed -n "s|.*<PackageVersion Include=\"$1\" Version=\"\([^\"]*\)\".*|\1|p" Directory.Packages.props | head -n 1; }
[[ "$deps" == "InfLlmV2.Onnx.GraphTools $version
Microsoft.Extensions.AI.Abstractions $(pkg_version Microsoft.Extensions.AI.Abstractions)
Microsoft.ML.OnnxRuntime.Extensions $(pkg_version Microsoft.ML.OnnxRuntime.Extensions)
Microsoft.ML.OnnxRuntime.Managed $ort_version
Microsoft.ML.Tokenizers $(pkg_version Microsoft.ML.Tokenizers)" ]] || problem "InfLlmV2.Onnx dependencies are not GraphTools, ORT Managed, ORT Extensions, Tokenizers and Extensions.AI.Abstractions only:
$deps"
grep -q '<license type="expression">' <<<"$nuspec" || problem "InfLlmV2.Onnx has no license expression"
# The tool: the pointer package (no program; its settings name the RID packages) and one package per
# RID with that RID's native files only, and every RID's op library (the bytes of InfLlmV2.Onnx's).
tool_files=$(list "$tool_pkg")
[[ $tool_files == "$(printf '%s\n' README.md infllmv2.nuspec tools/any/any/DotnetToolSettings.xml | LC_ALL=C sort)" ]] \
  || problem "the infllmv2 pointer package has other files than its settings:
$tool_files"
settings=$(unzip -p "$tool_pkg" tools/any/any/DotnetToolSettings.xml 2>/dev/null || true)
for rid in "${tool_rids[@]}"; do
  grep -q "<RuntimeIdentifierPackage RuntimeIdentifier=\"$rid\" Id=\"infllmv2.$rid\" */>" <<<"$settings" \
    || problem "the infllmv2 pointer package does not name infllmv2.$rid:
$settings"
done
for rid in "${tool_rids[@]}"; do
  pkg=$feed/infllmv2.$rid.$version.nupkg
  files=$(list "$pkg")
  dir=tools/net10.0/$rid
  case $rid in
    win-*) natives="onnxruntime.dll ortextensions.dll libSkiaSharp.dll" exe=infllmv2.exe ;;
    *) natives="libonnxruntime.so libortextensions.so libSkiaSharp.so" exe=infllmv2 ;;
  esac
  if [[ $rid == linux-x64 ]]; then natives+=" infllmv2_stage_bench"; fi
  for f in infllmv2.dll DotnetToolSettings.xml "$exe" $natives "$(op_file "$rid")"; do
    grep -qx "$dir/$f" <<<"$files" || problem "infllmv2.$rid lacks $dir/$f"
  done
  expected_others=$(for other in "${tool_rids[@]}"; do [[ $other == "$rid" ]] || echo "$dir/runtimes/$other/native/$(op_file "$other")"; done | LC_ALL=C sort)
  others=$(grep "^$dir/runtimes/" <<<"$files" || true)
  [[ $others == "$expected_others" ]] || problem "infllmv2.$rid: runtimes/ should hold the other RIDs' op libraries only; it has:
$others"
  foreign=$(grep -v "^$dir/" <<<"$files" | grep -v -x -e README.md -e "infllmv2.$rid.nuspec" || true)
  [[ -z $foreign ]] || problem "infllmv2.$rid has files outside $dir/: $foreign"
  case $rid in
    win-*) wrong=$(grep -E "^$dir/[^/]*\.(so|lib)$" <<<"$files" || true) ;;
    *) wrong=$(grep -E "^$dir/(onnxruntime[^/]*\.dll|[^/]*\.lib)$" <<<"$files" || true) ;;
  esac
  [[ -z $wrong ]] || problem "infllmv2.$rid carries another platform's native files: $(tr '\n' ' ' <<<"$wrong")"
  for other in "${tool_rids[@]}"; do
    f=$(op_file "$other")
    [[ $other == "$rid" ]] && path=$dir/$f || path=$dir/runtimes/$other/native/$f
    unzip -p "$pkg" "$path" >"$tmp/tool-op" 2>/dev/null || continue
    if [[ -f $tmp/natives/$other/$f ]]; then
      cmp -s "$tmp/tool-op" "$tmp/natives/$other/$f" || problem "infllmv2.$rid: $path differs from InfLlmV2.Onnx's runtimes/$other/native/$f"
    else
      check_format "infllmv2.$rid $path" "$tmp/tool-op" "$other"
    fi
  done
  ort=$dir/$(cut -d' ' -f1 <<<"$natives")
  if unzip -p "$pkg" "$ort" >"$tmp/tool-ort" 2>/dev/null; then check_format "infllmv2.$rid $ort" "$tmp/tool-ort" "$rid"; fi
done
log "packages: $(cd "$feed" && du -h ./*.nupkg | awk '{printf "%s %s, ", $2, $1}' | sed 's|\./||g; s|, $||')"

# ---- 2. the packed Linux op libraries ---------------------------------------------------------------
# readelf and objdump of the host's binutils read any ELF; the aarch64 ones are used where installed.
check_linux_so() {  # $1: RID, $2: the library
  local rid=$1 so=$2 readelf=readelf objdump=objdump loader needed allowed bad dynamic dynsyms exports cuda=""
  if [[ $rid == linux-arm64 ]]; then
    loader='ld-linux-aarch64\.so\.1'
    ! command -v aarch64-linux-gnu-readelf >/dev/null || readelf=aarch64-linux-gnu-readelf
    ! command -v aarch64-linux-gnu-objdump >/dev/null || objdump=aarch64-linux-gnu-objdump
  else
    loader='ld-linux-x86-64\.so\.2'
  fi
  needed=$($readelf -d "$so" | sed -n 's|.*(NEEDED).*\[\(.*\)\]|\1|p')
  allowed="^(libstdc\+\+\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libc\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|$loader)\$"
  bad=$(grep -v -E "$allowed" <<<"$needed" || true)
  [[ -z $bad ]] || problem "the packed $rid op library needs libraries an app does not have: $(tr '\n' ' ' <<<"$bad")(allowed: glibc, libstdc++, libgcc)"
  # (Outputs captured first: `readelf | grep -q` under pipefail fails when grep stops reading early.)
  dynamic=$($readelf -d "$so") dynsyms=$($readelf -W --dyn-syms "$so")
  ! grep -q -E '\((RPATH|RUNPATH)\)' <<<"$dynamic" || problem "the packed $rid op library has an RPATH/RUNPATH"
  ! grep -q -E '__(asan|tsan|ubsan|msan)_' <<<"$dynsyms" || problem "the packed $rid op library is a sanitizer build (it calls the sanitizer runtime)"
  # Newest symbol versions it asks for must exist on Debian 12 (glibc 2.36, GCC 12: GLIBCXX_3.4.30, CXXABI_1.3.13).
  newest() { $objdump -T "$so" | grep -o "$1[0-9.]*" | sed "s|^$1||" | sort -V | tail -n 1; }
  ver_le() { [[ -z $1 || "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" == "$2" ]]; }
  ver_le "$(newest GLIBC_)" 2.36 || problem "the $rid op library needs GLIBC_$(newest GLIBC_) (> Debian 12's 2.36)"
  ver_le "$(newest GLIBCXX_)" 3.4.30 || problem "the $rid op library needs GLIBCXX_$(newest GLIBCXX_) (> GCC 12's 3.4.30)"
  ver_le "$(newest CXXABI_)" 1.3.13 || problem "the $rid op library needs CXXABI_$(newest CXXABI_) (> GCC 12's 1.3.13)"
  exports=$(awk '$5=="GLOBAL" && $7!="UND" {print $8}' <<<"$dynsyms" | sed 's|@.*||' | sort -u)
  [[ "$exports" == RegisterCustomOps ]] || problem "the $rid op library exports more than RegisterCustomOps: $(tr '\n' ' ' <<<"$exports")"
  if [[ $rid == linux-x64 ]]; then
    if grep -q '\.nv_fatbin' <<<"$($readelf -S "$so")"; then cuda="; CUDA kernels compiled in (static cudart)"
    elif command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
      problem "nvcc is installed but the packed op library has no CUDA kernels (a stale artifacts/native or artifacts/natives-build/linux-x64 configure? remove it)"
    else cuda="; CPU kernels only (no nvcc here)"; fi
  fi
  log "$rid op library: NEEDED $(tr '\n' ' ' <<<"$needed")- GLIBC_$(newest GLIBC_), GLIBCXX_$(newest GLIBCXX_)$cuda"
}
for rid in linux-x64 linux-arm64; do
  so=$tmp/natives/$rid/libinfllmv2_ops.so
  if [[ -s $so ]]; then check_linux_so "$rid" "$so"
  else log "$rid op library: MISSING from the package$([[ $rid == linux-x64 ]] && echo ' (the app test below must fail)')"; fi
done
if [[ -s $tmp/natives/win-x64/infllmv2_ops.dll ]]; then log "win-x64 op library: $(file -b "$tmp/natives/win-x64/infllmv2_ops.dll" 2>/dev/null || echo 'PE32+ x86-64 DLL')"
else log "win-x64 op library: MISSING from the package"; fi

# The local feed plus the user's sources (the NuGet feed) for the app and the tool.
cat >"$tmp/nuget.config" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="infllmv2-package-test" value="$feed" />
  </packageSources>
</configuration>
EOF

# ---- 3. the tool ---------------------------------------------------------------------------------
log "dotnet tool install infllmv2 --tool-path $tools --version $version"
(cd "$tmp" && dotnet tool install infllmv2 --tool-path "$tools" --add-source "$feed" --version "$version") \
  >"$tmp/tool-install.log" 2>&1 || { cat "$tmp/tool-install.log"; fail "dotnet tool install"; }
infllmv2="$tools/infllmv2"
(cd "$work" && "$infllmv2" version) >"$tmp/version.txt" 2>&1 || { cat "$tmp/version.txt"; fail "infllmv2 version"; }
cat "$tmp/version.txt"
grep -q "^infllmv2 *$base_version" "$tmp/version.txt" || fail "infllmv2 version does not print $base_version"
grep -q "^onnxruntime *$ort_version ($tools/" "$tmp/version.txt" || fail "the tool did not load its own ONNX Runtime $ort_version"
grep -q "^op library *$tools/.*/infllmv2.linux-x64/.*/libinfllmv2_ops.so$" "$tmp/version.txt" \
  || fail "the tool did not find the op library in its own package folder (infllmv2.linux-x64)"
grep -q "cuda .*not available: this ONNX Runtime .* was built without the CUDA execution provider" "$tmp/version.txt" \
  || fail "the tool's CUDA diagnosis is not the CPU-package one"
set +e; (cd "$work" && "$infllmv2" run /nonexistent.onnx --inputs "$work" --device cuda) >"$tmp/cuda.txt" 2>&1; rc=$?; set -e
[[ $rc == 2 ]] && grep -q "CUDA is not available: this ONNX Runtime" "$tmp/cuda.txt" \
  || { cat "$tmp/cuda.txt"; fail "--device cuda from the tool: expected exit 2 naming the CPU-only ONNX Runtime, got $rc"; }

log "infllmv2 demo --long-prompt 1024 (from the tool; generates the default model)"
(cd "$work" && "$infllmv2" demo --long-prompt 1024) >"$tmp/demo.txt" 2>&1 || { cat "$tmp/demo.txt"; fail "infllmv2 demo"; }
grep -q "dense mode agrees with the original model" "$tmp/demo.txt" || { cat "$tmp/demo.txt"; fail "demo: dense mode disagrees"; }
demo_model=$(sed -n 's|^model: .* -> \(/.*tiny-decoder\.onnx\)$|\1|p' "$tmp/demo.txt")
[[ -f $demo_model ]] || fail "demo printed no model path"
mkdir -p "$work/model"
cp "$demo_model" "$demo_model.data" "$(dirname "$demo_model")/tokenizer.json" "$(dirname "$demo_model")/tokenizer_config.json" "$work/model/"
original=$work/model/tiny-decoder.onnx
(cd "$work" && "$infllmv2" rewrite "$original" -o "$work/tool-rewritten/model.infllmv2.onnx" --report "$work/tool-report.json") \
  >"$tmp/rewrite.txt" 2>&1 || { cat "$tmp/rewrite.txt"; fail "infllmv2 rewrite"; }
grep -q '"rewritten": 2' "$work/tool-report.json" || { cat "$work/tool-report.json"; fail "infllmv2 rewrite: expected 2 rewritten sites"; }
# A genai folder for Windows, prepared here: the win-x64 op library from the tool's package, named in the config.
mkdir -p "$work/genai"
cp "$original" "$original.data" "$work/genai/"
echo '{"model": {"decoder": {"filename": "tiny-decoder.onnx", "session_options": {}}}}' >"$work/genai/genai_config.json"
(cd "$work" && "$infllmv2" rewrite --genai-folder "$work/genai" -o "$work/genai-win" --target-os windows --target-arch x64) \
  >"$tmp/rewrite-win.txt" 2>&1 || { cat "$tmp/rewrite-win.txt"; fail "infllmv2 rewrite --genai-folder --target-os windows"; }
grep -q '"custom_ops_library": "infllmv2_ops.dll"' "$work/genai-win/genai_config.json" \
  || { cat "$work/genai-win/genai_config.json"; fail "rewrite --target-os windows: genai_config.json does not name infllmv2_ops.dll"; }
[[ ! -e $work/genai-win/libinfllmv2_ops.so ]] || fail "rewrite --target-os windows also copied the Linux op library"
if [[ -f $tmp/natives/win-x64/infllmv2_ops.dll ]]; then
  cmp -s "$work/genai-win/infllmv2_ops.dll" "$tmp/natives/win-x64/infllmv2_ops.dll" \
    || fail "rewrite --target-os windows: the folder's infllmv2_ops.dll is not the package's win-x64 op library"
fi

# ---- 4. the app -----------------------------------------------------------------------------------
log "fresh console app: dotnet new console; dotnet add package InfLlmV2.Onnx $version, Microsoft.ML.OnnxRuntime $ort_version"
mkdir -p "$app"
cp "$tmp/nuget.config" "$app/nuget.config"
(
  cd "$app"
  dotnet new console --framework net10.0 --name PackageUser --output . >/dev/null
  # --no-restore: the build below restores once (from the feed and the NuGet feed).
  dotnet add package InfLlmV2.Onnx --version "$version" --no-restore >/dev/null
  dotnet add package Microsoft.ML.OnnxRuntime --version "$ort_version" --no-restore >/dev/null
  cp "$root/eng/package-test/Program.cs" Program.cs
) >"$tmp/app-setup.log" 2>&1 || { cat "$tmp/app-setup.log"; fail "creating the app"; }
! grep -q -i -e 'ProjectReference' -e "$root" "$app/PackageUser.csproj" || fail "the app refers to the repository"

run_app() {  # $1: label, $2: the app's folder, $3...: command
  local label=$1 dir=$2; shift 2
  "$@" >"$tmp/app-$label.txt" 2>&1 || { cat "$tmp/app-$label.txt"; fail "the app ($label) failed"; }
  sed "s|^|  [$label] |" "$tmp/app-$label.txt"
  grep -q '^chat: .* streamed updates' "$tmp/app-$label.txt" || fail "the app ($label) got no streamed answer through IChatClient"
  lib=$(sed -n 's|^op library: ||p' "$tmp/app-$label.txt")
  [[ $lib == "$dir"/* ]] || fail "the app ($label) loaded the op library from $lib, not from its own folder $dir"
  lib=$(sed -n 's|^extensions library: ||p' "$tmp/app-$label.txt")
  [[ $lib == "$dir"/* ]] || fail "the app ($label) found the ONNX Runtime Extensions library at $lib, not in its own folder $dir"
  grep -q '^tokenizer: onnxruntime-extensions (byte-level BPE), .* agree and decode the text back' "$tmp/app-$label.txt" \
    || fail "the app ($label) did not tokenize through ONNX Runtime Extensions"
}
log "dotnet run"
(cd "$app" && dotnet build -c Release -nologo -v q >"$tmp/app-build.log" 2>&1) || { cat "$tmp/app-build.log"; fail "dotnet build of the app"; }
restored=$(grep -o '"InfLlmV2.Onnx/[^"]*"' "$app/obj/project.assets.json" | head -n 1)
[[ $restored == "\"InfLlmV2.Onnx/$version\"" ]] || fail "restored $restored, not this run's $version"
run_app run "$app/bin/Release/net10.0" dotnet run --project "$app" -c Release --no-build -- "$original" "$work/app-run"
[[ -f $app/bin/Release/net10.0/runtimes/linux-x64/native/libinfllmv2_ops.so ]] || fail "dotnet build did not place the op library under bin/.../runtimes/linux-x64/native"
log "dotnet publish -r linux-x64"
(cd "$app" && dotnet publish -c Release -r linux-x64 --self-contained false -o "$app/publish" -nologo -v q >"$tmp/app-publish.log" 2>&1) \
  || { cat "$tmp/app-publish.log"; fail "dotnet publish -r linux-x64"; }
run_app publish "$app/publish" "$app/publish/PackageUser" "$original" "$work/app-publish"

# The library's rewrite is the tool's, byte for byte; the tool's run reproduces the app's logits.
cmp -s "$work/app-run/rewritten/model.infllmv2.onnx" "$work/tool-rewritten/model.infllmv2.onnx" \
  || fail "InfLlmV2.Onnx.GraphTools and infllmv2 rewrite wrote different models"
for label in run publish; do
  (cd "$work" && "$infllmv2" run "$work/app-$label/rewritten/model.infllmv2.onnx" --inputs "$work/app-$label/testdata" --atol 1e-6) \
    >"$tmp/tool-run-$label.txt" 2>&1 || { cat "$tmp/tool-run-$label.txt"; fail "infllmv2 run: the CLI's outputs differ from the app's ($label)"; }
  grep -q -i 'logits' "$tmp/tool-run-$label.txt" || { cat "$tmp/tool-run-$label.txt"; fail "infllmv2 run compared no logits"; }
done
log "infllmv2 run reproduces the app's logits and caches (atol 1e-6); the app's and the tool's rewrites are identical"
((${#problems[@]} == 0)) || fail "${#problems[@]} problem(s) with the packages (above)"
log "passed"
