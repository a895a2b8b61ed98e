#!/usr/bin/python3
"""Holds lathe's gradients against central finite differences of the
reference loss, for models whose hand-written reference backprop does not
exist yet (the architecture families).

check_grad_fd.py SPEC WEIGHTS TOKENS TARGETS GRADS [--per-tensor N] [--h H] [--iterations N]
                 [--shortcut D1,D2,...] [--supervise S]

The loss is test/reference/train.py's `loss` (mean cross-entropy of the
float64 forward of test/reference/decoder.py, written from
ARCHITECTURES.md). For every tensor, the entry with the largest gradient and
N - 1 seeded random entries are perturbed by +-H (in the float32 weights the
forward reads); the central difference must match lathe's gradient within
2e-2 of the tensor's largest gradient (float32 weights limit how small H can
be).

With a Parcae spec whose loop.backprop k is below iterations n (truncated
backprop, ARCHITECTURES.md s4.1), the loss differenced is the one in which
h_{n-k} (the state entering iteration n-k) is held at its value under the
unperturbed weights: it is computed once, and every perturbed forward runs
the last k iterations from it (decoder.forward(..., frozen_state=...)).

--iterations N (Parcae only; 1 <= N, and N <= loop.sample_max when the spec has it): the
loss is the mean cross-entropy of the forward that runs N core passes (one training draw
of loop.sample_max's depth sampling, decoder.forward(..., iterations=N)), and k becomes
min(N, backprop) (backprop defaults to loop.iterations): when k < N the state h_{N-k} is
held at its unperturbed value as above. The first line printed is then
`iterations N of at most M: state entering iteration N-k held constant (backprop k)` or
`iterations N of at most M, full backprop` (M = loop.sample_max; without it the line reads
`iterations N (no loop.sample_max)` in place of `iterations N of at most M`).

--shortcut D1,D2,... (LoopFormer with loop.shortcut: true, ARCHITECTURES.md s4.2
"Shortcut-consistency training"; required for such a spec): the short trajectory's step
sizes, decimals or fractions (0.5,0.25,0.25 or 2/4,1/4,1/4), each > 0, summing to 1. The
loss differenced is train.loss's shortcut objective
    CE(long) + 0.1 CE(short) + 0.1 MSE(sg(x_long_final), x_short_final),   long = [1/M] * M,
with the long pass's post-final-norm hidden states computed once at the unperturbed weights
and held constant in every perturbed evaluation (loss(..., frozen_long_final=...)), i.e. the
gradient of the objective with sg(). The first line printed is then
`shortcut D1 D2 ...: loss = CE(long) + 0.1 CE(short) + 0.1 MSE(sg(long), short)`.

--supervise S (LoopUS, loop.kind: loopus, ARCHITECTURES.md s4.3 "Training: random deep
supervision"; the index of the supervised loop step, 0 <= S < loop.supervision.steps, default
0: a loopus spec always takes this objective): the loss differenced is train.supervised_loss
    L = CE_new + beta SiLU(CE_new - CE_old) + BCE_logits(z, acc)
at h = advance^S(E(tokens)), what `lathe-run grad --supervise S` differentiates. h is computed
once from the unperturbed weights (train.loopus_states) and held constant, and so are CE_old =
CE(Dec(h)) and acc (the token accuracy of Dec(advance(h))), both at their unperturbed values;
so the encoder's layers (and an untied embedding, learned positions) have zero gradient.
TOKENS / TARGETS may then hold several ';'-separated sequences (L and the gradient are the
means over them). The first line printed is then
`supervise S: h = advance^S(E(tokens)) held constant; L = CE_new + B SiLU(CE_new - CE_old) + BCE(z, acc)`
(B = the spec's beta).
"""
import argparse
import fractions
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
import decoder  # noqa: E402
import safetensors_np  # noqa: E402
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("weights")
    ap.add_argument("tokens")
    ap.add_argument("targets")
    ap.add_argument("grads")
    ap.add_argument("--per-tensor", type=int, default=3)
    ap.add_argument("--h", type=float, default=2e-3)
    ap.add_argument("--iterations", type=int, default=None,
                    help="parcae: the core pass count of this training draw (default loop.iterations)")
    ap.add_argument("--shortcut", default=None, metavar="D1,D2,...",
                    help="loopformer loop.shortcut: the short trajectory's step sizes (0.5,0.25,0.25 or 2/4,1/4,1/4)")
    ap.add_argument("--supervise", type=int, default=None, metavar="S",
                    help="loopus: the supervised loop step's index (default 0), as lathe-run grad --supervise")
    args = ap.parse_args()
    spec = decoder.load_spec(args.spec)
    sup = None
    if decoder.is_loopus(spec):
        sup = 0 if args.supervise is None else args.supervise
        try:
            train.check_supervise(spec, sup)
        except ValueError as e:
            ap.error(f"--supervise: {e}")
    elif args.supervise is not None:
        ap.error("--supervise is only for loopus specs (loop.kind: loopus)")
    short = None
    if args.shortcut is not None:
        if not decoder.loopformer_shortcut(spec):
            ap.error("--shortcut is only for loopformer specs with loop.shortcut: true")
        try:
            short = [float(fractions.Fraction(x.strip())) for x in args.shortcut.split(",")]
        except (ValueError, ZeroDivisionError):
            ap.error(f"--shortcut {args.shortcut!r}: expected comma-separated step sizes such as 0.5,0.25,0.25 "
                     f"or 2/4,1/4,1/4")
        try:
            short = decoder.check_trajectory(short, "--shortcut")
        except ValueError as e:
            ap.error(str(e))
    elif decoder.loopformer_shortcut(spec):
        ap.error("the spec has loop.shortcut: true: pass --shortcut D1,D2,... (the short trajectory)")
    n_run = args.iterations                      # None: loop.iterations, the existing behaviour
    if n_run is not None:
        if decoder.parcae_backprop(spec) is None:
            ap.error("--iterations is only for parcae loops")
        try:
            decoder.parcae_iterations(spec, n_run)
        except ValueError as e:
            ap.error(f"--iterations: {e}")
    w, _ = safetensors_np.load(args.weights)
    w = {k: np.array(v, np.float32) for k, v in w.items()}
    g, _ = safetensors_np.load(args.grads)
    if sup is not None:          # one sequence, or ';'-separated rows
        tokens = np.array([[int(t) for t in r.split(",")] for r in args.tokens.split(";")])
        targets = np.array([[int(t) for t in r.split(",")] for r in args.targets.split(";")])
    else:
        tokens = np.array([int(t) for t in args.tokens.split(",")])
        targets = np.array([int(t) for t in args.targets.split(",")])
    rng = np.random.default_rng(0)
    loss = train.loss
    k = decoder.parcae_backprop(spec, n_run)
    if k is not None:
        n = decoder.parcae_iterations(spec, n_run)
        j = decoder.frozen_state_index(spec, n_run)      # n - k
    if k is not None and (n_run is not None or j > 0):
        tok, tgt = train._batch(spec, tokens, targets)
        frozen = [None] * len(tok)                       # full backprop: nothing held
        if j > 0:
            for i, row in enumerate(tok):
                tr = {}
                decoder.forward(spec, w, row, trace=tr, iterations=n_run)
                frozen[i] = np.array(tr["h"][j])

        def loss(spec, w, tokens, targets):
            logits = np.stack([decoder.forward(spec, w, row, frozen_state=f, iterations=n_run)
                               for row, f in zip(tok, frozen)])
            return float(np.mean(train.cross_entropy(logits, tgt)))
        if n_run is None:
            print(f"truncated backprop: state entering iteration {j} held constant "
                  f"(backprop {k} of {n} iterations)")
        else:
            m = spec["loop"].get("sample_max")
            head = f"iterations {n} of at most {m}" if m is not None else f"iterations {n} (no loop.sample_max)"
            print(f"{head}: state entering iteration {j} held constant (backprop {k})" if j > 0
                  else f"{head}, full backprop")
    if short is not None:
        frozen_long = train.shortcut_long_final(spec, w, tokens)     # sg(x_long_final) at the unperturbed weights

        def loss(spec, w, tokens, targets):
            return train.loss(spec, w, tokens, targets, shortcut=short, frozen_long_final=frozen_long)
        print(f"shortcut {' '.join(str(d) for d in short)}: "
              f"loss = CE(long) + 0.1 CE(short) + 0.1 MSE(sg(long), short)")
    if sup is not None:
        # h = advance^S(E(tokens)), CE_old and acc at the unperturbed weights, held constant.
        hs = train.loopus_states(spec, w, tokens, sup)
        _, tgt = train._batch(spec, tokens, targets)
        held = [train.supervised_loss(spec, w, h, t)[1] for h, t in zip(hs, tgt)]

        def loss(spec, w, tokens, targets):
            return float(np.mean([train.supervised_loss(spec, w, h, t, ce_old=p["ce_old"], acc=p["acc"])[0]
                                  for h, t, p in zip(hs, tgt, held)]))
        print(f"supervise {sup}: h = advance^{sup}(E(tokens)) held constant; "
              f"L = CE_new + {train.loopus_supervision(spec)['beta']:g} SiLU(CE_new - CE_old) + BCE(z, acc)")
    base = loss(spec, w, tokens, targets)
    if abs(base - float(g["loss"][0])) > 1e-4 * abs(base):
        print(f"MISMATCH loss: lathe {float(g['loss'][0])} reference {base}")
        return 1
    worst, bad = 0.0, 0
    for name in sorted(w):
        grad = np.asarray(g[name], np.float64)
        scale = max(float(np.abs(grad).max()), 1e-6)
        picks = [np.unravel_index(int(np.argmax(np.abs(grad))), grad.shape)]
        for _ in range(args.per_tensor - 1):
            picks.append(tuple(int(rng.integers(0, d)) for d in grad.shape))
        for idx in picks:
            old = w[name][idx]
            w[name][idx] = old + np.float32(args.h)
            up = loss(spec, w, tokens, targets)
            w[name][idx] = old - np.float32(args.h)
            down = loss(spec, w, tokens, targets)
            w[name][idx] = old
            step = float(np.float32(old + np.float32(args.h)) - np.float32(old - np.float32(args.h)))
            fd = (up - down) / step
            err = abs(fd - float(grad[idx])) / scale
            worst = max(worst, err)
            if err > 2e-2:
                bad += 1
                print(f"MISMATCH {name}{list(idx)}: lathe {float(grad[idx]):.6g} "
                      f"finite difference {fd:.6g} (error {err:.2e} of the tensor's max)")
    if bad:
        return 1
    print(f"OK {len(w)} tensors, worst {worst:.1e} of each tensor's largest gradient")
    return 0


if __name__ == "__main__":
    sys.exit(main())
