#!/usr/bin/python3
"""Holds lathe's optimizer steps against test/reference/train.py.

check_train_step.py SPEC W0 TOKENS TARGETS LR STEPS_FILE... [--optimizer adamw|muon]
                    [--muon-lr-scale S] [--muon-momentum MU] [--grads G] [--supervise S0,S1,...]

W0 holds the initial weights; TOKENS and TARGETS are `;`-separated rows (one
per sequence of the batch); each STEPS_FILE is the checkpoint lathe-run
train-step wrote after step 1, 2, ... on that same batch with learning rate
LR. The reference takes the same steps in float64: mean cross-entropy
gradients (reference backprop), clipping to global norm 1.0, AdamW (beta1
0.9, beta2 0.95, eps 1e-8, weight decay 0.1 except on no_decay_names), and
every parameter and both moments are compared after every step (each step
starting from lathe's previous checkpoint).

--optimizer muon (lathec --train --optimizer muon): the parameters
train.muon_params selects (2-D, named "layers.*") take Muon (Nesterov
momentum MU, default 0.95; learning rate LR * S, S default 20; the same
weight decay and no-decay rule), the others AdamW as above. The checkpoint
holds Muon's momentum buffer of P as `muon.b.P` and AdamW's moments of the
others as `adam.m.P`, `adam.v.P`. For a Muon parameter the buffer is
compared with the reference's (relative 1e-3 of its largest: this holds
lathe's gradient and the momentum recurrence), and the weight with the Muon
update the reference computes from lathe's own gradient (recovered from the
checkpoints as muon.b.P - MU * previous muon.b.P), to 1e-2 of the update's
largest entry. Newton-Schulz multiplies a gradient error along a small
singular direction by up to ~485, so the weight is not held against the
reference's own gradient; the buffer check covers that gradient.

--grads G (one sequence, one step): the families whose backprop the
reference does not hand-write (attention residuals, ...) take their
gradients from G, what `lathe-run grad` wrote for that sequence and
check_grad_fd.py held against finite differences of the reference loss;
the step (clipping, AdamW or Muon, decay and no-decay rule) is then the
reference's, in float64, as above.

--supervise S0,S1,... (LoopUS, loop.kind: loopus, ARCHITECTURES.md s4.3 "Training: random
deep supervision"; required for such a spec, AdamW only): the supervised step indices that
`lathe-run train-step --supervise S0,S1,...` was given (sorted, distinct, each in [0,
loop.supervision.steps)). Train step t is train.loopus_train_step: h_b = E(tokens_b); for
each j, S_j: advance h_b to step S_j with the current weights, the supervised loss's
gradient (mean over the batch), h_b = advance(h_b) with the same weights, clip to global
norm 1.0 and one AdamW update at AdamW step (t - 1) len(S) + j + 1. Each STEPS_FILE (the
checkpoint after train step 1, 2, ..., so after len(S) AdamW updates each) is compared as
above, starting each train step from lathe's previous checkpoint; its optimizer.step may
count train steps (t) or AdamW updates (t len(S)). An entry counts as near-zero when its
clipped gradient is below 1e-4 of its tensor's largest in ANY of the train step's updates;
it is then held to |update| <= len(S) lr (plus the decay). The step line reads
`step t: loss L grad_norm N1,N2,... OK` (L: the mean supervised loss over the updates and
the batch; Nj: the pre-clip norm of update j).
"""
import argparse
import math
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


def parse(argv):
    ap = argparse.ArgumentParser(prog=os.path.basename(argv[0]), description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("w0")
    ap.add_argument("tokens")
    ap.add_argument("targets")
    ap.add_argument("lr", type=float)
    ap.add_argument("steps", nargs="+", metavar="STEPS_FILE")
    ap.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw")
    ap.add_argument("--muon-lr-scale", type=float, default=None, help="Muon lr = LR * S (default 20)")
    ap.add_argument("--muon-momentum", type=float, default=None, help="Muon's momentum (default 0.95)")
    ap.add_argument("--grads", default=None,
                    help="gradients (lathe-run grad's output, checked by finite differences) "
                         "instead of the reference backprop; one sequence, one step")
    ap.add_argument("--supervise", default=None, metavar="S0,S1,...",
                    help="loopus: the supervised step indices of every train step (sorted, distinct)")
    args = ap.parse_intermixed_args(argv[1:])
    spec = decoder.load_spec(args.spec)
    if args.supervise is not None:
        if not decoder.is_loopus(spec):
            ap.error("--supervise is only for loopus specs (loop.kind: loopus)")
        if args.optimizer != "adamw" or args.grads is not None:
            ap.error("--supervise takes AdamW and the reference's own gradients (no --optimizer muon, no --grads)")
        try:
            args.supervise = train.check_supervise(spec, [int(x) for x in args.supervise.split(",")])
        except ValueError as e:
            ap.error(f"--supervise {args.supervise!r}: {e}")
    elif decoder.is_loopus(spec) and args.grads is None:
        ap.error("a loopus spec trains by random deep supervision: pass --supervise S0,S1,... "
                 "(the train steps' supervised step indices)")
    if args.optimizer != "muon" and (args.muon_lr_scale is not None or args.muon_momentum is not None):
        ap.error("--muon-lr-scale / --muon-momentum need --optimizer muon")
    if args.grads is not None and (len(args.steps) != 1 or ";" in args.tokens):
        ap.error("--grads holds the gradient of one sequence at W0: one row, one step")
    if args.muon_lr_scale is None:
        args.muon_lr_scale = 20.0
    if args.muon_momentum is None:
        args.muon_momentum = 0.95
    return args


def main(argv):
    args = parse(argv)
    muon = args.optimizer == "muon"
    spec = decoder.load_spec(args.spec)
    weights, _ = safetensors_np.load(args.w0)
    tokens, targets = rows(args.tokens), rows(args.targets)
    lr, mu, lr_muon = args.lr, args.muon_momentum, args.lr * args.muon_lr_scale
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    muon_names = train.muon_params(w) if muon else []
    muon_set = set(muon_names)
    adam_names = [k for k in w if k not in muon_set]
    m = v = None
    b = {}
    sup = args.supervise                       # loopus: the supervised step indices, else None
    for step, path in enumerate(args.steps, start=1):
        if step > 1:
            # Each step starts from lathe's previous checkpoint, so that a
            # near-zero gradient's sign flip (below) does not carry over.
            prev_ckpt, _ = safetensors_np.load(args.steps[step - 2])
            w = {k: prev_ckpt[k].astype(np.float64) for k in w}
            m = {k: prev_ckpt["adam.m." + k].astype(np.float64) for k in adam_names}
            v = {k: prev_ckpt["adam.v." + k].astype(np.float64) for k in adam_names}
            b = {k: prev_ckpt["muon.b." + k].astype(np.float64) for k in muon_names}
        no_decay = set(train.no_decay_names(spec, list(w)))
        w_prev, b_prev = w, b
        n_upd = 1                              # AdamW updates in this train step
        if sup is not None:
            w, m, v, info = train.loopus_train_step(spec, w, m, v, tokens, targets, sup, lr, step, max_norm=1.0,
                                                    beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
            w = {k: w[k] for k in w_prev}
            loss, n_upd, all_clipped = info["loss"], len(sup), info["clipped"]
            norm_text = ",".join(f"{x:.6f}" for x in info["grad_norms"])
        else:
            if args.grads is not None:
                given, _ = safetensors_np.load(args.grads)
                grads = {k: given[k].astype(np.float64) for k in w}
                loss = float(given["loss"][0])
            else:
                loss, grads = train.loss_and_grads(spec, w, tokens, targets)
            clipped, norm = train.clip_by_global_norm(grads, 1.0)
            all_clipped, norm_text = [clipped], f"{norm:.6f}"
            w, m, v, b = train.optimizer_step(w, clipped, m, v, b, step, lr, optimizer=args.optimizer,
                                              muon_names=muon_names, muon_momentum=mu,
                                              muon_lr_scale=args.muon_lr_scale, beta1=0.9, beta2=0.95,
                                              eps=1e-8, weight_decay=0.1, no_decay=sorted(no_decay))
        got, _ = safetensors_np.load(path)
        # loopus: the checkpoint may count train steps or AdamW updates
        steps_ok = (step,) if sup is None else (step, step * n_upd)
        if int(got["optimizer.step"][0]) not in steps_ok:
            print(f"MISMATCH step {step}: checkpoint says {got['optimizer.step'][0]}")
            return 1
        need = list(w) + [p + k for k in adam_names for p in ("adam.m.", "adam.v.")] + \
            ["muon.b." + k for k in muon_names]
        missing = [k for k in need if k not in got]
        if missing:
            print(f"MISMATCH step {step}: {missing[0]} missing from {path}"
                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            return 1
        for name in adam_names:
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
            # (loopus: len(S) updates per train step; near-zero in any of them, held to
            # len(S) lr.) A tensor whose whole gradient is float32 noise
            # (below 1e-6 of the largest gradient of any tensor) counts as
            # near-zero throughout: attention's key bias has an exactly zero
            # gradient (softmax ignores the per-query constant q . b_k), so
            # its float32 gradient is rounding noise of either sign.
            sure = np.ones(w[name].shape, bool)
            for clipped in all_clipped:
                g = np.abs(clipped[name])
                floor = 1e-6 * max(float(np.abs(x).max()) for x in clipped.values())
                sure &= g >= max(1e-4 * float(g.max()), floor, 1e-30)
            prev = w_prev[name]
            have = got[name].astype(np.float64)
            err = np.abs(have - w[name]) / lr
            if sure.any() and float(err[sure].max()) > 1e-2:
                print(f"MISMATCH step {step} {name}: error {float(err[sure].max()):.3e} lr")
                return 1
            decay = 0.0 if name in no_decay else 0.1
            bound = np.abs(have - prev * (1 - lr * decay) ** n_upd) / lr
            if (~sure).any() and float(bound[~sure].max()) > 1.01 * n_upd:
                print(f"MISMATCH step {step} {name}: a near-zero gradient moved "
                      f"{float(bound[~sure].max()):.3f} lr")
                return 1
            if not sure.any():
                # Noise throughout: its moments must be noise-sized too.
                big = max(float(np.abs(x).max()) for c in all_clipped for x in c.values())
                noise = float(np.abs(got["adam.m." + name]).max())
                if noise > 1e-6 * big or float(np.abs(got["adam.v." + name]).max()) > (1e-6 * big) ** 2:
                    print(f"MISMATCH step {step} {name}: a zero gradient's moments are {noise:.3e}")
                    return 1
                continue
            for label, want in (("adam.m.", m[name]), ("adam.v.", v[name])):
                if rel(got[label + name], want) > 1e-3:
                    print(f"MISMATCH step {step} {label}{name}: rel {rel(got[label + name], want):.3e}")
                    return 1
        for name in muon_names:
            # The momentum buffer B = MU B_prev + G against the reference's
            # (lathe's gradient and recurrence), relatively as Adam's moments.
            label = "muon.b." + name
            have_b = got[label].astype(np.float64)
            if have_b.shape != b[name].shape or not np.all(np.isfinite(have_b)):
                print(f"MISMATCH step {step} {label}: shape {list(have_b.shape)} or non-finite values")
                return 1
            if rel(have_b, b[name]) > 1e-3:
                print(f"MISMATCH step {step} {label}: rel {rel(have_b, b[name]):.3e}")
                return 1
            # The weight against the Muon step from lathe's own gradient,
            # in units of that step's largest entry (decay excluded): 1e-2.
            prev = w_prev[name]
            zero = np.zeros_like(prev)
            g_lathe = have_b - mu * b_prev.get(name, zero)
            want_w, _ = train.muon_step({name: prev}, {name: g_lathe}, {name: b_prev.get(name, zero)},
                                        lr_muon, mu, 0.1, no_decay=sorted(no_decay))
            decay = 0.0 if name in no_decay else 0.1
            unit = max(float(np.max(np.abs(prev * (1 - lr_muon * decay) - want_w[name]))), 1e-6 * lr_muon)
            have = got[name].astype(np.float64)
            err = float(np.max(np.abs(have - want_w[name]))) / unit if np.all(np.isfinite(have)) else math.inf
            if err > 1e-2:
                print(f"MISMATCH step {step} {name}: Muon error {err:.3e} of the update")
                return 1
        print(f"step {step}: loss {loss:.6f} grad_norm {norm_text} OK")
    if sup is not None:
        print(f"OK {len(args.steps)} steps, {len(w)} parameters and their moments "
              f"(supervised steps {','.join(map(str, sup))}: {len(sup)} AdamW updates per step)")
    elif muon:
        print(f"OK {len(args.steps)} steps, {len(w)} parameters ({len(muon_names)} Muon, "
              f"{len(adam_names)} AdamW) and their optimizer states")
    else:
        print(f"OK {len(args.steps)} steps, {len(w)} parameters and their moments")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
