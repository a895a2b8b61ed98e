#!/usr/bin/python3
"""emulated_examples.py EXAMPLES_DIR WORK_DIR NAME...: for each example spec
NAME.yaml, compiles it with --train --train-seq 16 for the cpu and for cuda,
gives both the same initial weights, and compares the cuda-emulated device
with the cpu device on:
  - forward logits of 16 tokens: max |difference| <= 2e-5 of max |logit|;
  - grad: every gradient within 1e-3 of its tensor's largest entry (or of
    1e-5 of the largest gradient anywhere, for a tensor whose gradient is
    zero but for rounding), and the loss within 1e-5 relative;
  - one AdamW train step on two sequences (four with --tf32): loss and gradient norm within
    1e-4 relative, every weight within 2.5 lr (AdamW's first step moves each
    weight by about lr times the sign of its gradient, and a gradient near
    zero may take either sign on the two devices).
With --tf32 first, both are compiled with --train-batch 4 (four sequences
packed as windows of one pass, so a block of 64 query rows spans four
windows and meets key tiles none of its later rows see; grad and the train
step take all four), and cuda with
--gemm-precision=tf32, so that attention's products run as tf32 tensor-core
fragments (and cuBLASLt's GEMMs as tf32). tf32 keeps 10 of f32's 23
mantissa bits (relative rounding 2^-11, about 5e-4 per operand), so the
bounds become: logits 3e-3, gradients 2e-2 of their tensor's largest
entry, loss 1e-3, the train step's loss and gradient norm 2e-3.
Prints one line per spec ending in MATCH, or MISMATCH and exits 1."""
import os
import random
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "reference"))
import safetensors_np  # noqa: E402

args = sys.argv[1:]
tf32 = args[0] == "--tf32"
if tf32:
    args = args[1:]
examples, work, names = args[0], args[1], args[2:]
LR = 1e-3
PACK = ["--train-batch", "4"] if tf32 else []
CUDA = PACK + (["--gemm-precision=tf32"] if tf32 else [])
TOL = ({"logits": 3e-3, "grad": 2e-2, "loss": 1e-3, "step": 2e-3} if tf32 else
       {"logits": 2e-5, "grad": 1e-3, "loss": 1e-5, "step": 1e-4})


def run(*args):
    out = subprocess.run(list(args), capture_output=True, text=True)
    if out.returncode != 0:
        sys.stdout.write(out.stdout + out.stderr)
        print(f"MISMATCH: {' '.join(args)} failed")
        sys.exit(1)
    return out.stdout


def tensors(path):
    loaded = safetensors_np.load(path)
    return loaded[0] if isinstance(loaded, tuple) else loaded


def fields(text, key):
    line = [l for l in text.splitlines() if l.startswith(key + " ")][0]
    parts = line.split()
    return {parts[i]: float(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}


rng = random.Random(7)
ok = 0
for name in names:
    spec = os.path.join(examples, name + ".yaml")
    cpu, cuda = f"{work}/{name}.cpu.lathe", f"{work}/{name}.cuda.lathe"
    run("lathec", spec, "--train", "--train-seq", "16", *PACK, "-o", cpu)
    run("lathec", spec, "--train", "--train-seq", "16", "--target=cuda", *CUDA, "-o", cuda)
    w = f"{work}/{name}.w.safetensors"
    run("lathe-run", cpu, "init", "--seed", "3", "-o", w)
    seqs = [[rng.randrange(256) for _ in range(17)] for _ in range(4 if tf32 else 2)]
    toks = [",".join(map(str, s[:16])) for s in seqs]
    tgts = [",".join(map(str, s[1:])) for s in seqs]
    report = []

    # forward
    for dev, target in (("cpu", cpu), ("cuda-emulated", cuda)):
        run("lathe-run", target, "forward", f"--device={dev}", "--weights", w,
            "--tokens", toks[0], "--logits-out", f"{work}/{name}.{dev}.npy")
    a, b = np.load(f"{work}/{name}.cpu.npy"), np.load(f"{work}/{name}.cuda-emulated.npy")
    err = float(np.abs(a - b).max() / np.abs(a).max())
    report.append(f"logits {err:.1e}")
    bad = err > TOL["logits"]

    # grad
    for dev, target in (("cpu", cpu), ("cuda-emulated", cuda)):
        run("lathe-run", target, "grad", f"--device={dev}", "--weights", w,
            "--tokens", ",".join(toks) if tf32 else toks[0],
            "--targets", ",".join(tgts) if tf32 else tgts[0], "--out", f"{work}/{name}.{dev}.g.safetensors")
    ga, gb = tensors(f"{work}/{name}.cpu.g.safetensors"), tensors(f"{work}/{name}.cuda-emulated.g.safetensors")
    worst = 0.0
    # A tensor's error is measured against its largest gradient, but not
    # below 1e-5 of the largest of all: attention's key bias (gpt2-124m) has
    # an exactly zero gradient (softmax ignores q . b_k), so both devices
    # give float32 rounding noise there, of either sign.
    floor = 1e-5 * max(float(np.abs(v).max()) for k, v in ga.items() if k != "loss")
    for k in ga:
        if k == "loss":
            rel = abs(float(ga[k][0]) - float(gb[k][0])) / abs(float(ga[k][0]))
            bad |= rel > TOL["loss"]
            continue
        scale = max(float(np.abs(ga[k]).max()), floor)
        if scale > 0:
            worst = max(worst, float(np.abs(ga[k] - gb[k]).max()) / scale)
        else:
            bad |= float(np.abs(gb[k]).max()) != 0.0
    report.append(f"gradients {worst:.1e}")
    bad |= worst > TOL["grad"]

    # one train step
    outs = {}
    for dev, target in (("cpu", cpu), ("cuda-emulated", cuda)):
        text = run("lathe-run", target, "train-step", f"--device={dev}", "--weights", w,
                   "--tokens", ";".join(toks), "--targets", ";".join(tgts), "--lr", str(LR),
                   "--step", "1", "--out", f"{work}/{name}.{dev}.s1.safetensors")
        outs[dev] = fields(text, "loss")
    la, lb = outs["cpu"], outs["cuda-emulated"]
    step_err = max(abs(la[k] - lb[k]) / abs(la[k]) for k in ("loss", "grad_norm"))
    sa = tensors(f"{work}/{name}.cpu.s1.safetensors")
    sb = tensors(f"{work}/{name}.cuda-emulated.s1.safetensors")
    moved = max(float(np.abs(sa[k] - sb[k]).max()) for k in sa if not k.startswith(("adam.", "muon.", "optimizer.")))
    report.append(f"train step {step_err:.1e} (weights within {moved / LR:.2f} lr)")
    bad |= step_err > TOL["step"] or moved > 2.5 * LR

    print(f"{name}: {', '.join(report)}: {'MISMATCH' if bad else 'MATCH'}")
    if bad:
        sys.exit(1)
    ok += 1
print(f"{ok} example specs match")
