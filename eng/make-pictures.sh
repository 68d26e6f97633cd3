#!/usr/bin/env bash
# Regenerates the README's pictures in docs/images/ with the CLI itself (one command each):
#   needle-selection.png  ./infllmv2 demo                          (the demo's needle case; it prints the path)
#   drift.png             ./infllmv2 compare ORIGINAL REWRITTEN --prompt-len 8188 --decode-steps 8 --plot F
#                         (the demo's default model; the prompt runs dense, decode turns sparse at 8192 tokens)
#   speedup.png           ./infllmv2 bench --quick --plot F         (about 3 minutes on the 2-core machine)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/docs/images"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

./infllmv2 demo --output-dir "$work/demo" --no-progress >"$work/demo.log"
cp "$work/demo/needle-selection.png" "$out/needle-selection.png"
echo "wrote $out/needle-selection.png (./infllmv2 demo)"

./infllmv2 compare "$work/demo/tiny-decoder.onnx" "$work/demo/tiny-decoder.infllmv2.onnx" \
  --prompt-len 8188 --decode-steps 8 --plot "$out/drift.png" --no-progress >"$work/compare.log"
echo "wrote $out/drift.png (./infllmv2 compare ... --plot)"

./infllmv2 bench --quick --plot "$out/speedup.png" --no-progress >"$work/bench.log"
echo "wrote $out/speedup.png (./infllmv2 bench --quick --plot)"
