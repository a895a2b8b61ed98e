#!/usr/bin/python3
"""Holds lathe's optimizer steps against test/reference/train.py.

check_train_step.py SPEC W0 TOKENS TARGETS LR STEPS_FILE...

W0 holds the initial weights; TOKENS and TARGETS are `;`-separated rows (one
per sequence of the batch); each STEPS_FILE is the checkpoint lathe-run
train-step wrote after step 1, 2, ... on that same batch with learning rate
LR. The reference takes the same steps in float64: mean cross-entropy
gradients (reference backprop), clipping to global norm 1.0, AdamW (beta1
0.9, beta2 0.95, eps 1e-8, weight decay 0.1 except on no_decay_names), and
every parameter and both moments are compared after every step (each step
starting from lathe's previous checkpoint).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
import decoder  # noqa: E402
import safetensors_np  # noqa: E402
import train  # noqa: E402


def rows(text):
    return np.array([[int(t) for t in r.split(",")] for r in text.split(";")], dtype=np.int64)


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def main(argv):
    spec = decoder.load_spec(argv[1])
    weights, _ = safetensors_np.load(argv[2])
    tokens, targets = rows(argv[3]), rows(argv[4])
    lr = float(argv[5])
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    m = v = None
    for step, path in enumerate(argv[6:], start=1):
        if step > 1:
            # Each step starts from lathe's previous checkpoint, so that a
            # near-zero gradient's sign flip (below) does not carry over.
            prev_ckpt, _ = safetensors_np.load(argv[5 + step - 1])
            w = {k: prev_ckpt[k].astype(np.float64) for k in w}
            m = {k: prev_ckpt["adam.m." + k].astype(np.float64) for k in w}
            v = {k: prev_ckpt["adam.v." + k].astype(np.float64) for k in w}
        loss, grads = train.loss_and_grads(spec, w, tokens, targets)
        clipped, norm = train.clip_by_global_norm(grads, 1.0)
        no_decay = set(train.no_decay_names(spec, list(w)))
        w_prev = w
        w, m, v = train.adamw_step(w, clipped, m, v, step, lr, 0.9, 0.95, 1e-8, 0.1,
                                   no_decay=sorted(no_decay))
        got, _ = safetensors_np.load(path)
        if int(got["optimizer.step"][0]) != step:
            print(f"MISMATCH step {step}: checkpoint says {got['optimizer.step'][0]}")
            return 1
        for name in w:
            # A parameter moves by about lr per step (Adam's first steps are
            # nearly sign(g) lr), so its error is measured in units of lr:
            # at most 1e-2 lr. Where a gradient is within float32 rounding
            # of zero (below 1e-4 of its tensor's largest, e.g. the row of a
            # token seen once), g / (|g| + eps) can flip sign between
            # float32 and float64 (seen: 0.46 lr at |g| = 1e-8); there the
            # step is only held to Adam's bound, |update| <= lr (plus the
            # decay). A missing weight decay (wd |p| ~ 0.05 lr with the
            # test's large weights) or a wrong clip factor is caught either
            # way. The moments are compared relatively (1e-3 of the
            # tensor's largest).
            g = np.abs(clipped[name])
            sure = g >= 1e-4 * max(float(g.max()), 1e-30)
            prev = w_prev[name]
            have = got[name].astype(np.float64)
            err = np.abs(have - w[name]) / lr
            if sure.any() and float(err[sure].max()) > 1e-2:
                print(f"MISMATCH step {step} {name}: error {float(err[sure].max()):.3e} lr")
                return 1
            decay = 0.0 if name in no_decay else 0.1
            bound = np.abs(have - prev * (1 - lr * decay)) / lr
            if (~sure).any() and float(bound[~sure].max()) > 1.01:
                print(f"MISMATCH step {step} {name}: a near-zero gradient moved "
                      f"{float(bound[~sure].max()):.3f} lr")
                return 1
            for label, want in (("adam.m.", m[name]), ("adam.v.", v[name])):
                if rel(got[label + name], want) > 1e-3:
                    print(f"MISMATCH step {step} {label}{name}: rel {rel(got[label + name], want):.3e}")
                    return 1
        print(f"step {step}: loss {loss:.6f} grad_norm {norm:.6f} OK")
    print(f"OK {len(argv) - 6} steps, {len(w)} parameters and their moments")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
