#!/bin/sh
# One family spec against the numpy reference: compile for cpu and cuda,
# write scaled random weights, then forward, prefill(5) + decode, and
# prefill + decode through the emulated GPU kernels must each match.
# $1 = work dir holding $2.yaml.
set -e
d=$1; s=$2; tokens=3,1,4,1,5,9,2,6,5,3,5,8
lathec "$d/$s.yaml" -o "$d/$s.lathe"
lathec "$d/$s.yaml" --target=cuda -o "$d/$s.cuda.lathe"
python3=${PYTHON:-/usr/bin/python3}
ref="$($python3 -c 'import os,sys; print(os.path.dirname(os.path.realpath(sys.argv[1])))' "$0")/../reference/decoder.py"
$python3 "$ref" --spec "$d/$s.yaml" --write-weights "$d/$s.st" --seed 5 --scale 10 --norm-jitter 0.3
lathe-run "$d/$s.lathe" forward --weights "$d/$s.st" --tokens $tokens --logits-out "$d/$s.cpu.npy" > /dev/null
$python3 "$ref" --spec "$d/$s.yaml" --weights "$d/$s.st" --tokens $tokens --compare "$d/$s.cpu.npy"
lathe-run "$d/$s.lathe" cached-forward --prefill 5 --weights "$d/$s.st" --tokens $tokens --logits-out "$d/$s.cached.npy" > /dev/null
$python3 "$ref" --spec "$d/$s.yaml" --weights "$d/$s.st" --tokens $tokens --compare "$d/$s.cached.npy"
lathe-run "$d/$s.cuda.lathe" cached-forward --device=cuda-emulated --prefill 5 --weights "$d/$s.st" --tokens $tokens --logits-out "$d/$s.emu.npy" > /dev/null
$python3 "$ref" --spec "$d/$s.yaml" --weights "$d/$s.st" --tokens $tokens --compare "$d/$s.emu.npy"
