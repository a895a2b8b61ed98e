#!/usr/bin/python3
"""emulated_examples.py EXAMPLES_DIR WORK_DIR NAME...: for each example spec
NAME.yaml, compiles it with --train --train-seq 16 for the cpu and for cuda,
gives both the same initial weights, and compares the cuda-emulated device
with the cpu device on:
  - forward logits of 16 tokens: max |difference| <= 2e-5 of max |logit|;
  - grad: every gradient within 1e-3 of its tensor's largest entry (or of
    1e-5 of the largest gradient anywhere, for a tensor whose gradient is
    zero but for rounding), and the loss within 1e-5 relative;
  - one AdamW train step on two sequences: loss and gradient norm within
    1e-4 relative, every weight within 2.5 lr (AdamW's first step moves each
    weight by about lr times the sign of its gradient, and a gradient near
    zero may take either sign on the two devices).
Prints one line per spec ending in MATCH, or MISMATCH and exits 1."""
import os
import random
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "reference"))
import safetensors_np  # noqa: E402

examples, work, names = sys.argv[1], sys.argv[2], sys.argv[3:]
LR = 1e-3


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
    run("lathec", spec, "--train", "--train-seq", "16", "-o", cpu)
    run("lathec", spec, "--train", "--train-seq", "16", "--target=cuda", "-o", cuda)
    w = f"{work}/{name}.w.safetensors"
    run("lathe-run", cpu, "init", "--seed", "3", "-o", w)
    seqs = [[rng.randrange(256) for _ in range(17)] for _ in range(2)]
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
    bad = err > 2e-5

    # grad
    for dev, target in (("cpu", cpu), ("cuda-emulated", cuda)):
        run("lathe-run", target, "grad", f"--device={dev}", "--weights", w,
            "--tokens", toks[0], "--targets", tgts[0], "--out", f"{work}/{name}.{dev}.g.safetensors")
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
            bad |= rel > 1e-5
            continue
        scale = max(float(np.abs(ga[k]).max()), floor)
        if scale > 0:
            worst = max(worst, float(np.abs(ga[k] - gb[k]).max()) / scale)
        else:
            bad |= float(np.abs(gb[k]).max()) != 0.0
    report.append(f"gradients {worst:.1e}")
    bad |= worst > 1e-3

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
    bad |= step_err > 1e-4 or moved > 2.5 * LR

    print(f"{name}: {', '.join(report)}: {'MISMATCH' if bad else 'MATCH'}")
    if bad:
        sys.exit(1)
    ok += 1
print(f"{ok} example specs match")
