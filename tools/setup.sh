#!/usr/bin/env bash
# Sets lathe up on a fresh Debian 12 machine: installs what is missing from
# Debian's packages, builds everything into build/, then compiles
# examples/tiny.yaml, initialises weights and runs a forward pass.
#
#   bash tools/setup.sh              # install + build + demo
#   bash tools/setup.sh --deps-only  # install only (what CI uses)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  cmake ninja-build ccache
  clang-22 lld-22
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools
  flatbuffers-compiler libflatbuffers-dev
  libopenblas-dev
  python3-numpy python3-yaml
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "== all packages present"
fi
if [ ! -x /usr/local/cuda/bin/ptxas ] && ! command -v ptxas >/dev/null; then
  echo "== note: no CUDA toolkit (ptxas, libdevice) found: --target=cuda and the PTX tests will be skipped"
fi
[ "${1:-}" = "--deps-only" ] && exit 0

echo "== building (build/)"
cmake --preset default >/dev/null
cmake --build --preset default

echo
echo "== compiling examples/tiny.yaml for the CPU"
export PATH="$PWD/build/bin:$PATH"
mkdir -p build/demo
lathec examples/tiny.yaml --target=cpu -o build/demo/tiny.lathe
lathe-run build/demo/tiny.lathe info | head -7
echo
echo "== random weights, then a forward pass over the bytes of \"Hello\""
lathe-run build/demo/tiny.lathe init --seed 1 -o build/demo/tiny.safetensors
lathe-run build/demo/tiny.lathe forward --weights build/demo/tiny.safetensors \
  --tokens 72,101,108,108,111 --logits-out build/demo/logits.npy
echo
echo "== greedy generation with the KV cache (prefill, then one token at a time)"
lathe-run build/demo/tiny.lathe generate --weights build/demo/tiny.safetensors \
  --prompt "To be, or not" -n 24 --temperature 0
echo
echo "(untrained weights: the predictions are noise, but they are the model's own:"
echo " 'cmake --workflow --preset check' checks them against a numpy reference)"
