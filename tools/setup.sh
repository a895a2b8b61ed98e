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
echo "(untrained weights: noise, but the model's own; the tests check them"
echo " against a numpy reference)"
echo
echo "== training it on Shakespeare (examples/tinyshakespeare.txt) for ~15 s:"
echo "   forward, loss, backward and AdamW, all compiled (lathec --train; the"
echo "   batch's 16 sequences run as one pass of 16 x 64 rows: --train-batch 16)"
lathec examples/tiny.yaml --train --train-batch 16 -o build/demo/tiny.train.lathe
lathe-run build/demo/tiny.train.lathe train --data examples/tinyshakespeare.txt \
  --steps 800 --batch 16 --lr 3e-3 --eval-every 200 --out build/demo/trained.safetensors
echo
echo "== sampling from the trained weights (loss curve: build/demo/trained.svg)"
lathe-run build/demo/tiny.train.lathe generate --weights build/demo/trained.safetensors \
  --prompt "ROMEO:" -n 56 --temperature 0.8 --top-k 40 --seed 1
