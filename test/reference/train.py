#!/usr/bin/python3
"""Independent numpy reference for training lathe's standard decoder (float64).

Written from docs/model-and-weights.md (the contract) and ARCHITECTURES.md (which
parameters get no weight decay), reusing decoder.py's forward and primitives; not
from the compiler's sources.

  loss(spec, weights, tokens, targets)              mean cross-entropy (minus the attn_res entropy bonus;
                                                    loopformer loop.shortcut: the shortcut-consistency objective)
  shortcut_long_final(spec, weights, tokens)        the long pass's final hidden states (held constant by sg())
  mean_routing_entropy(spec, weights, tokens)       Hbar, the mean entropy of the attn_res routing weights
  loss_and_grads(spec, weights, tokens, targets)    (loss, {name: dL/dname}), hand-written backprop
  clip_by_global_norm(grads, max_norm)              (clipped grads, pre-clip global norm)
  lr_at(step, base_lr, warmup, total, min_lr)       warmup + cosine schedule (step counts from 1)
  adamw_step(weights, grads, m, v, step, lr, ...)   one torch.optim.AdamW update
  no_decay_names(spec, names)                       the parameters without weight decay
  muon_params(names_and_shapes)                     the parameters Muon updates (2-D, under "layers.")
  newton_schulz(G)                                  Muon's quintic Newton-Schulz orthogonalisation
  muon_step(weights, grads, b, lr, ...)             one Muon update (Nesterov momentum, decoupled decay)
  optimizer_step(weights, grads, m, v, b, step, lr, optimizer=...)
                                                    one step of AdamW, or of Muon + AdamW for the rest
  LoopUS random deep supervision (ARCHITECTURES.md s4.3; loop.kind: loopus), float64, hand-written backprop:
  loopus_supervision(spec)                          {steps, supervised, beta} with the defaults filled in
  check_supervise(spec, S)                          S as a validated sorted list of distinct ints in [0, steps)
  loopus_encode(spec, weights, tokens)              h_0 = E(tokens) [T, D] (one sequence)
  loopus_advance(spec, weights, h)                  advance(h) = gate(R(h), h), one loop pass
  loopus_states(spec, weights, tokens, s)           [advance^s(E(tokens_b)) per sequence]
  supervised_loss(spec, weights, h, targets, beta=None, ce_old=None, acc=None)
                                                    (L, parts: ce_new, ce_old, acc, z, h_new), h constant
  supervised_loss_and_grads(spec, weights, h, targets, beta=None, ce_old=None, acc=None)
                                                    (L, parts, {name: dL/dname})
  loopus_grad(spec, weights, tokens, targets, supervise=0)
                                                    (mean_b L_b, mean_b G_b, parts): `lathe-run grad --supervise s`
  loopus_train_step(spec, weights, m, v, tokens, targets, supervise, lr, step)
                                                    (weights, m, v, info): `lathe-run train-step --supervise S0,S1,..`

Conventions:
- tokens / targets: int arrays of shape [T] (one sequence) or [B, T] (B independent
  sequences, no attention across rows). The loss is the mean over all B*T positions of
  -log softmax(logits[b, t])[targets[b, t]]; gradients are of that mean.
- attn_res.entropy_bonus = lambda (ARCHITECTURES.md s2.3 "Entropy bonus: loss -= lambda *
  mean entropy(alpha)", default 0 = off; any attn_res kind): the training objective is
      loss = mean CE - lambda * Hbar,
  Hbar = mean_routing_entropy: the mean, over every routing site that decoder.forward
  evaluates (trace["routing_alpha"]: the sites with parameters, i.e. attn_res_sites, the
  delta_v sites attn_res_v_sites and the final site of full / block; a single-source site
  does no routing and is not counted) and over every token position of every sequence
  of the batch, of H = -sum_n alpha_n ln(alpha_n) (natural log, 0 ln 0 = 0, the null
  source is one of the candidates n). Every sequence has the same length, so each
  (sequence, site, position) weighs the same. With no routing site Hbar = 0. With
  lambda = 0 or without attn_res the loss is exactly the mean CE.
- loop.shortcut: true (LoopFormer only; ARCHITECTURES.md s4.2 "Shortcut-consistency
  training"): loss(..., shortcut=[d_1 .. d_l]) is
      CE(long) + 0.1 * CE(short) + 0.1 * MSE(sg(x_long_final), x_short_final)
  long = [1/M] * M (M = loop.iterations; NOT the spec's trajectory), short = the given
  step sizes (decoder.forward(..., trajectory=...): each > 0, summing to 1 within 1e-6; the
  reference does not insist on s4.2's length 1 .. M-1 or multiples of 1/M). CE is the mean
  cross-entropy over all B*T positions; x_final is the post-final-norm hidden state
  (decoder.forward's trace["final_hidden"], [T, D]); MSE is the mean over all B*T*D
  elements. sg() does not change the value; loss(..., frozen_long_final=[B arrays [T, D]])
  uses the given states as the MSE target instead of recomputing them (finite differences
  with them held at shortcut_long_final's unperturbed value give the sg() gradient).
- loss_and_grads covers only the standard decoder (every option of the contract's options
  table, taper excluded); three_phase, attn_res, loop and mlp.taper raise
  NotImplementedError in it (LoopUS has its own hand-written backprop, below). With tie_embeddings the gradient of
  embed.weight is the sum of its input (gather) and LM-head uses.
- LoopUS (loop.kind: loopus; s4.3 "Training: random deep supervision"): loss_and_grads refuses
  it; its objective lives in the loopus_* / supervised_* functions. Parts: E = the embedding
  (+ learned positions) and layers [0, P); R = layers [P, P+C); Dec = layers [P+C, L), the
  final norm and the head. Spec key loop.supervision: {steps: NR, supervised: NS, beta: B},
  defaults steps = loop.iterations, supervised = min(5, steps), beta = 1.0.
  advance(h) = gate(R(h), h): u = R(h), delta = u - h, Abar = exp(-softplus(W_up W_down delta
  + b) exp(A_log)), h' = Abar u + (1 - Abar) h (no halting in training). For one sequence with
  h [T, D] held constant (no gradient into h):
      z = w_q . LayerNorm(delta[T-1]) + b_q     (LN affine, eps 1e-5; the logit, no sigmoid;
                                                 row T-1: every training token is real)
      CE_new = mean_t CE(Dec(h')[t]);  CE_old = sg(mean_t CE(Dec(h)[t]))
      acc = sg(mean_t [argmax_v Dec(h')[t] == target_t])
      L = CE_new + beta SiLU(CE_new - CE_old) + BCE_logits(z, acc),
      BCE_logits(z, a) = max(z, 0) - z a + log(1 + exp(-|z|)),  SiLU(x) = x sigmoid(x).
  The gradient is zero for the encoder's layers, pos_embed and (untied) embed.weight; a tied
  embed.weight gets the head's gradient only. A batch averages L_b and G_b over b.
  grad --supervise s: h = advance^s(E(tokens)) at the given weights, then L and its gradient.
  train-step t --supervise S (sorted, distinct, in [0, NR)): h_b = E(tokens_b); k = 0; for
  j, s in enumerate(S): h_b = advance^(s-k)(h_b) (current weights); L_b, G_b at h_b;
  h_b = advance(h_b) (the same weights, before the update); G = mean_b G_b, clipped to global
  norm 1; adamw_step at AdamW step (t - 1) len(S) + j + 1; k = s + 1. Reported loss: the mean
  of L_b over j and b.
- lr_at: step is the 1-based index t of the optimizer update (t = 1 .. total), the same t
  adamw_step uses for bias correction. Linear warmup lr = base_lr * t / warmup for
  t < warmup (t = 0 would give 0), lr_at(warmup) = base_lr, then cosine
  min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * (t - warmup) / (total - warmup)))
  for warmup <= t <= total, so lr_at(total) = min_lr; min_lr for t > total.
- adamw_step follows torch.optim.AdamW exactly: p *= 1 - lr * wd (wd = 0 for no-decay
  names); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  p -= lr * (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps).
- Muon (lathec --train --optimizer muon; Keller Jordan's Muon, Nesterov momentum, decoupled
  weight decay): the parameters muon_params selects (name starts with "layers." and 2-D)
  take muon_step with lr_muon = lr * muon_lr_scale (lr: the step's scheduled AdamW lr,
  muon_lr_scale default 20); every other parameter takes adamw_step exactly as above with
  lr. Both see the same globally clipped gradients and the same no-decay rule. For W [m, n]
  with gradient G and momentum buffer B (zeros at first, mu default 0.95):
    B = mu B + G;  U = G + mu B;  X = newton_schulz(U)
    W *= 1 - lr_muon wd;  W -= lr_muon sqrt(max(1, m / n)) X
  newton_schulz: X = U / (||U||_F + 1e-7), transposed when m > n (so rows <= cols), then 5 x
  { A = X X^T; X = a X + (b A + c A A) X } with (a, b, c) = (3.4445, -4.7750, 2.0315), and
  transposed back. It maps each singular value s of U / (||U||_F + 1e-7) to f^5(s),
  f(s) = a s + b s^3 + c s^5 (singular vectors kept): into [0.68, 1.21] for s >= 2e-3,
  [0.68, 1.14] for s >= 1e-2, and ~485 s for tiny s (not an exact orthogonalisation).

CLI:
  train.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --targets 2,3,4 --out G.safetensors
      writes every gradient (float32, the weight's name and shape) plus "loss" (float32, shape [1])
  train.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --targets 2,3,4 --compare G.safetensors [--rtol 1e-3]
      compares a gradient file against the reference: one line per tensor (and "loss"),
      rel = max|a - b| / max(max|b|, 1e-12) with b the reference; exit 1 if any rel > rtol
      or a tensor is missing or has the wrong shape (extra tensors are reported, not fatal).
  --tokens / --targets may hold several sequences separated by ';' (a [B, T] batch).
  --supervise s (loopus specs; default 0): the gradient of loopus_grad, i.e. of `lathe-run grad
      --supervise s` (a loopus spec always takes this objective).
"""
import argparse
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import decoder as ref  # noqa: E402
import safetensors_np  # noqa: E402


# ---------------------------------------------------------------- helpers

def _check_standard(spec):
    if ref.is_loopus(spec):
        raise NotImplementedError("train.py: LoopUS trains by random deep supervision (s4.3): use "
                                  "loopus_grad / supervised_loss_and_grads / loopus_train_step")
    for key in ("three_phase", "attn_res", "loop"):
        if spec.get(key) is not None:
            raise NotImplementedError(f"train.py: gradients for the {key} spec key are not implemented "
                                      f"(standard decoder only)")
    if spec["mlp"].get("taper") is not None:
        raise NotImplementedError("train.py: gradients for mlp.taper are not implemented (standard decoder only)")


def _batch(spec, tokens, targets):
    """int64 arrays [B, T] (a 1-D input becomes B = 1), validated."""
    tok, tgt = np.asarray(tokens), np.asarray(targets)
    if tok.shape != tgt.shape:
        raise ValueError(f"tokens {list(tok.shape)} and targets {list(tgt.shape)} differ in shape")
    if tok.ndim == 1:
        tok, tgt = tok[None], tgt[None]
    if tok.ndim != 2 or tok.shape[1] == 0 or tok.shape[0] == 0:
        raise ValueError(f"tokens must have shape [T] or [B, T] with B, T >= 1, got {list(np.shape(tokens))}")
    if tok.shape[1] > spec["max_seq"]:
        raise ValueError(f"T = {tok.shape[1]} exceeds max_seq = {spec['max_seq']}")
    V = spec["vocab"]
    for a, n in ((tok, "token"), (tgt, "target")):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{n} ids must be integers, got dtype {a.dtype}")
        if a.min() < 0 or a.max() >= V:
            raise ValueError(f"{n} ids must lie in [0, {V})")
    return tok.astype(np.int64), tgt.astype(np.int64)


def _check_shapes(spec, weights):
    """Names and shapes as documented; any float dtype (float64 allowed, for finite differences)."""
    for name, (shape, _) in ref.weight_shapes(spec).items():
        if name not in weights:
            raise ValueError(f"missing tensor {name}")
        if tuple(np.shape(weights[name])) != shape:
            raise ValueError(f"tensor {name} has shape {list(np.shape(weights[name]))}, expected {list(shape)}")


def cross_entropy(logits, targets):
    """Per-position -log softmax(logits)[target], float64; logits [..., V], targets [...]."""
    m = np.max(logits, axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.sum(np.exp(logits - m), axis=-1))
    return lse - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


# ---------------------------------------------------------------- loss

def _entropy(alpha):
    """H = -sum_n alpha_n ln(alpha_n) over axis 0 (natural log; 0 ln 0 = 0), float64."""
    a = np.asarray(alpha, np.float64)
    return -np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0), axis=0)


def _hbar(alphas_per_row):
    """Mean of H over every (sequence, routing site, position); 0.0 with no routing site."""
    Hs = [_entropy(a) for row in alphas_per_row for a in row]    # each [T]
    return float(np.mean(np.stack(Hs))) if Hs else 0.0


def mean_routing_entropy(spec, weights, tokens):
    """Hbar (float): the mean routing entropy that attn_res.entropy_bonus rewards (s2.3).

    tokens: [T] or [B, T] as loss takes them (validated by _batch); float32 weights (the
    entropy is read off decoder.forward's trace["routing_alpha"]). Hbar is the mean over
    all sequences, all recorded routing sites and all positions of H = -sum_n alpha_n
    ln(alpha_n) (natural log, 0 ln 0 = 0); 0.0 when the model has no routing site
    (no attn_res, or no site with >= 2 candidates). Does not depend on lambda.
    """
    tok, _ = _batch(spec, tokens, tokens)
    per_row = []
    for row in tok:
        tr = {}
        ref.forward(spec, weights, row, trace=tr)
        per_row.append(tr.get("routing_alpha", []))
    return _hbar(per_row)


def loss(spec, weights, tokens, targets, shortcut=None, frozen_long_final=None):
    """Mean cross-entropy over all positions (float), minus the attn_res entropy bonus.

    The objective is mean CE - lambda * Hbar with lambda = spec["attn_res"]["entropy_bonus"]
    (ARCHITECTURES.md s2.3; default 0 = off, and absent without attn_res) and Hbar =
    mean_routing_entropy(spec, weights, tokens): the mean over all B sequences, every
    routing site the forward evaluates (trace["routing_alpha"]) and all T positions of
    H = -sum_n alpha_n ln(alpha_n). With lambda = 0 or without attn_res the result is
    exactly the mean cross-entropy (no entropy is computed).

    The logits come from decoder.forward (the reference forward, no KV cache) when every
    weight is float32, as in a weight file. decoder.forward refuses other dtypes, so
    float64 weights (finite differences) go through forward_train, the forward that
    loss_and_grads differentiates; it is built from decoder.py's primitives and the
    self-check requires it to equal decoder.forward.

    LoopFormer with loop.shortcut: true (s4.2 shortcut-consistency): shortcut (the short
    trajectory's step sizes) is required and the result is
    CE(long) + 0.1 CE(short) + 0.1 MSE(sg(x_long_final), x_short_final), long = [1/M] * M
    (see the module docstring; float32 weights, decoder.forward). frozen_long_final (a list of
    B arrays [T, D], one per sequence) replaces the long pass's final hidden states as the MSE
    target. Without loop.shortcut, passing shortcut or frozen_long_final is a ValueError.
    """
    if ref.loopformer_shortcut(spec):
        return _shortcut_loss(spec, weights, tokens, targets, shortcut, frozen_long_final)
    if shortcut is not None or frozen_long_final is not None:
        raise ValueError("loss: shortcut / frozen_long_final need a loopformer spec with loop.shortcut: true")
    tok, tgt = _batch(spec, tokens, targets)
    lam = (spec.get("attn_res") or {}).get("entropy_bonus", 0.0)
    if lam:                                      # attn_res only: decoder.forward (float32 weights)
        rows, per_row = [], []
        for row in tok:
            tr = {}
            rows.append(ref.forward(spec, weights, row, trace=tr))
            per_row.append(tr["routing_alpha"])
        return float(np.mean(cross_entropy(np.stack(rows), tgt))) - lam * _hbar(per_row)
    if all(np.asarray(a).dtype == np.float32 for a in weights.values()):
        logits = np.stack([ref.forward(spec, weights, row) for row in tok])
    else:
        _check_standard(spec)
        _check_shapes(spec, weights)
        W = {n: np.asarray(a, np.float64) for n, a in weights.items()}
        logits = np.stack([forward_train(spec, W, row)[0] for row in tok])
    return float(np.mean(cross_entropy(logits, tgt)))


SHORTCUT_CE_WEIGHT = 0.1      # s4.2: loss = CE(long) + 0.1 CE(short) + 0.1 MSE(sg(long), short)
SHORTCUT_MSE_WEIGHT = 0.1


def _long_trajectory(spec):
    M = spec["loop"]["iterations"]
    return [1.0 / M] * M


def shortcut_long_final(spec, weights, tokens):
    """[B arrays [T, D]]: the long pass's (trajectory [1/M] * M) post-final-norm hidden state of
    each sequence, the constant MSE target sg(x_long_final) (loss's frozen_long_final)."""
    if not ref.loopformer_shortcut(spec):
        raise ValueError("shortcut_long_final needs a loopformer spec with loop.shortcut: true")
    tok, _ = _batch(spec, tokens, tokens)
    out = []
    for row in tok:
        tr = {}
        ref.forward(spec, weights, row, trace=tr, trajectory=_long_trajectory(spec))
        out.append(np.array(tr["final_hidden"], np.float64))
    return out


def shortcut_terms(spec, weights, tokens, targets, shortcut, frozen_long_final=None):
    """(CE(long), CE(short), MSE(x_long_final, x_short_final)) of the shortcut objective."""
    if not ref.loopformer_shortcut(spec):
        raise ValueError("shortcut needs a loopformer spec with loop.shortcut: true")
    if shortcut is None:
        raise ValueError("loss: the spec has loop.shortcut: true, so the short trajectory `shortcut` "
                         "(a list of step sizes summing to 1) is required")
    short = ref.check_trajectory(shortcut, "loss: shortcut")
    tok, tgt = _batch(spec, tokens, targets)
    D = spec["d_model"]
    if frozen_long_final is not None:
        if not isinstance(frozen_long_final, (list, tuple)) or len(frozen_long_final) != len(tok):
            raise ValueError(f"loss: frozen_long_final must be a list of {len(tok)} arrays [T, D] "
                             f"(one per sequence)")
        for i, f in enumerate(frozen_long_final):
            if np.shape(f) != (tok.shape[1], D):
                raise ValueError(f"loss: frozen_long_final[{i}] has shape {list(np.shape(f))}, "
                                 f"expected {[tok.shape[1], D]}")
    lg_long, lg_short, x_long, x_short = [], [], [], []
    for i, row in enumerate(tok):
        tl, ts = {}, {}
        lg_long.append(ref.forward(spec, weights, row, trace=tl, trajectory=_long_trajectory(spec)))
        lg_short.append(ref.forward(spec, weights, row, trace=ts, trajectory=short))
        x_long.append(tl["final_hidden"] if frozen_long_final is None
                      else np.asarray(frozen_long_final[i], np.float64))
        x_short.append(ts["final_hidden"])
    ce_long = float(np.mean(cross_entropy(np.stack(lg_long), tgt)))
    ce_short = float(np.mean(cross_entropy(np.stack(lg_short), tgt)))
    mse = float(np.mean((np.stack(x_long) - np.stack(x_short)) ** 2))
    return ce_long, ce_short, mse


def _shortcut_loss(spec, weights, tokens, targets, shortcut, frozen_long_final):
    ce_long, ce_short, mse = shortcut_terms(spec, weights, tokens, targets, shortcut, frozen_long_final)
    return ce_long + SHORTCUT_CE_WEIGHT * ce_short + SHORTCUT_MSE_WEIGHT * mse


# ---------------------------------------------------------------- forward with a tape

def _act_grad(kind, z):
    """d act(z) / dz for gelu (tanh) and relu2."""
    if kind == "gelu":
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * z * z)
    return 2.0 * np.maximum(z, 0.0)


def _rope_back(dy, base):
    """Adjoint of decoder.rope (positions 0..T-1): rotate by the negative angle."""
    T, _, Dh = dy.shape
    half = Dh // 2
    f = base ** (-2.0 * np.arange(half) / Dh)
    ang = np.arange(T, dtype=np.float64)[:, None, None] * f[None, None, :]
    c, s = np.cos(ang), np.sin(ang)
    ya, yb = dy[..., :half], dy[..., half:]
    return np.concatenate([ya * c + yb * s, yb * c - ya * s], axis=-1)


def _norm(spec, W, x, n):
    """The spec's norm (layernorm with bias, or rmsnorm) named n, on x [..., D]."""
    if spec["norm"]["kind"] == "layernorm":
        return ref.layernorm(x, W[n + ".weight"], W[n + ".bias"], spec["norm"]["eps"])
    return ref.rmsnorm(x, W[n + ".weight"], spec["norm"]["eps"])


def _lin(spec, W, x, n):
    y = x @ W[n + ".weight"].T
    return y + W[n + ".bias"] if spec["bias"] else y


def _block_forward(spec, W, x, l):
    """Pre-norm block l (attention, then MLP, each with its residual) on x [T, D], float64
    weights W; (output [T, D], cache for _block_backward)."""
    D, H, K = spec["d_model"], spec["heads"], spec["kv_heads"]
    Dh, base = D // H, spec["rope"]["base"]
    use_rope, kind = spec["position"] == "rope", spec["mlp"]["kind"]
    normalizer = {"softmax": ref.softmax, "softpick": ref.softpick}[spec["attention"]["normalizer"]]
    T = x.shape[0]
    grp = np.arange(H) // (H // K)
    p, c = f"layers.{l}.", {}
    c["x_attn"] = x
    h = c["h_attn"] = _norm(spec, W, x, p + "attn_norm")
    q = _lin(spec, W, h, p + "attn.wq").reshape(T, H, Dh)
    k = _lin(spec, W, h, p + "attn.wk").reshape(T, K, Dh)
    v = _lin(spec, W, h, p + "attn.wv").reshape(T, K, Dh)
    if use_rope:
        q, k = ref.rope(q, base), ref.rope(k, base)
    P = ref.attention_probs(q, k, H, K, normalizer)                  # [H, T, T]
    kh, vh = k[:, grp], v[:, grp]
    a = np.einsum("hts,shd->thd", P, vh).reshape(T, H * Dh)
    c.update(q=q, kh=kh, vh=vh, P=P, a=a)
    if spec["attention"]["normalizer"] == "softpick":
        S = np.einsum("thd,shd->hts", q, kh) / np.sqrt(Dh)
        c["S"] = np.where(np.triu(np.ones((T, T), bool), k=1)[None], -np.inf, S)
    x = x + _lin(spec, W, a, p + "attn.wo")
    c["x_mlp"] = x
    h = c["h_mlp"] = _norm(spec, W, x, p + "mlp_norm")
    if kind == "swiglu":
        g, u = _lin(spec, W, h, p + "mlp.w_gate"), _lin(spec, W, h, p + "mlp.w_up")
        m = ref.silu(g) * u
        c.update(g=g, u=u)
    else:
        u = _lin(spec, W, h, p + "mlp.w_up")
        m = ref.gelu_tanh(u) if kind == "gelu" else ref.relu2(u)
        c["u"] = u
    c["m"] = m
    return x + _lin(spec, W, m, p + "mlp.w_down"), c


def _run_blocks(spec, W, x, layers):
    """x through the blocks `layers` in order; (output, [caches])."""
    caches = []
    for l in layers:
        x, c = _block_forward(spec, W, x, l)
        caches.append(c)
    return x, caches


def forward_train(spec, W, tokens):
    """(logits [T, V], tape) for one 1-D sequence, float64 weights W; the tape feeds _backward."""
    T = len(tokens)
    tape = {"tokens": tokens}
    x = W["embed.weight"][tokens]
    if spec["position"] != "rope":
        x = x + W["pos_embed.weight"][:T]
    x, tape["layers"] = _run_blocks(spec, W, x, range(spec["layers"]))
    tape["x_final"] = x
    hf = tape["h_final"] = _norm(spec, W, x, "norm")
    head = W["embed.weight"] if spec["tie_embeddings"] else W["lm_head.weight"]
    return hf @ head.T, tape


# ---------------------------------------------------------------- backward

def _layernorm_back(x, dy, g, eps):
    """(dx, dg, db) for y = LayerNorm(x) * g + b over the last axis (biased variance)."""
    xc = x - np.mean(x, axis=-1, keepdims=True)
    r = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
    xhat = xc * r
    dxh = dy * g
    dx = r * (dxh - np.mean(dxh, axis=-1, keepdims=True) - xhat * np.mean(dxh * xhat, axis=-1, keepdims=True))
    lead = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(lead), dy.sum(lead)


def _norm_back(spec, W, G, x, dy, n):
    """dL/dx for y = _norm(spec, W, x, n); accumulates the gain (and bias) gradients into G."""
    g, eps = W[n + ".weight"], spec["norm"]["eps"]
    if spec["norm"]["kind"] == "layernorm":
        dx, dg, db = _layernorm_back(x, dy, g, eps)
        G[n + ".bias"] += db
        G[n + ".weight"] += dg
        return dx
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    xhat = x * r
    G[n + ".weight"] += (dy * xhat).sum(0)
    dxh = dy * g
    return r * (dxh - xhat * np.mean(dxh * xhat, axis=-1, keepdims=True))


def _lin_back(spec, W, G, x, dy, n):
    G[n + ".weight"] += dy.T @ x
    if spec["bias"]:
        G[n + ".bias"] += dy.sum(0)
    return dy @ W[n + ".weight"]


def _block_backward(spec, W, G, c, l, dx):
    """dL/d(block l's input) from dL/d(its output) dx [T, D] and its cache c; accumulates into G."""
    D, H, K = spec["d_model"], spec["heads"], spec["kv_heads"]
    Dh, base = D // H, spec["rope"]["base"]
    use_rope, kind = spec["position"] == "rope", spec["mlp"]["kind"]
    T = dx.shape[0]
    rep = H // K
    p = f"layers.{l}."
    # MLP: x = x_mlp + lin(m, w_down)
    dm = _lin_back(spec, W, G, c["m"], dx, p + "mlp.w_down")
    if kind == "swiglu":
        g, u = c["g"], c["u"]
        sg = 1.0 / (1.0 + np.exp(-g))
        dg = dm * u * sg * (1.0 + g * (1.0 - sg))      # silu'(g) = s (1 + g (1 - s))
        dh = (_lin_back(spec, W, G, c["h_mlp"], dg, p + "mlp.w_gate")
              + _lin_back(spec, W, G, c["h_mlp"], dm * g * sg, p + "mlp.w_up"))
    else:
        dh = _lin_back(spec, W, G, c["h_mlp"], dm * _act_grad(kind, c["u"]), p + "mlp.w_up")
    dx = dx + _norm_back(spec, W, G, c["x_mlp"], dh, p + "mlp_norm")
    # attention: x = x_attn + lin(a, wo)
    da = _lin_back(spec, W, G, c["a"], dx, p + "attn.wo").reshape(T, H, Dh)
    P, q, kh, vh = c["P"], c["q"], c["kh"], c["vh"]
    dP = np.einsum("thd,shd->hts", da, vh)                      # [H, T, S]
    dvh = np.einsum("hts,thd->shd", P, da)                      # [S, H, Dh]
    if spec["attention"]["normalizer"] == "softmax":
        dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    else:
        # y_i = relu(e^x_i - 1) / Z, Z = sum_j |e^x_j - 1| + eps (masked j excluded):
        # dx_i = e^x_i / Z * ([x_i > 0] dy_i - sign(x_i) sum_j dy_j y_j). With m = max(max x, 0),
        # e^x_i / Z = e^(x_i - m) / (sum_j |e^(x_j - m) - e^-m| + eps e^-m), as in decoder.softpick.
        S = c["S"]
        mask = np.isneginf(S)
        mx = np.maximum(np.max(S, axis=-1, keepdims=True), 0.0)
        Sf = np.where(mask, 0.0, S)
        d = np.where(mask, 0.0, np.exp(Sf - mx) - np.exp(-mx))
        Zs = np.sum(np.abs(d), axis=-1, keepdims=True) + 1e-8 * np.exp(-mx)
        ex = np.where(mask, 0.0, np.exp(Sf - mx)) / Zs
        dot = np.sum(dP * P, axis=-1, keepdims=True)
        dS = ex * ((Sf > 0) * dP - np.sign(Sf) * dot)
        dS = np.where(mask, 0.0, dS)
    dS = dS / np.sqrt(Dh)
    dq = np.einsum("hts,shd->thd", dS, kh)
    dkh = np.einsum("hts,thd->shd", dS, q)
    dk = dkh.reshape(T, K, rep, Dh).sum(2)          # query head h reads kv head h // rep
    dv = dvh.reshape(T, K, rep, Dh).sum(2)
    if use_rope:
        dq, dk = _rope_back(dq, base), _rope_back(dk, base)
    h = c["h_attn"]
    dh = (_lin_back(spec, W, G, h, dq.reshape(T, H * Dh), p + "attn.wq")
          + _lin_back(spec, W, G, h, dk.reshape(T, K * Dh), p + "attn.wk")
          + _lin_back(spec, W, G, h, dv.reshape(T, K * Dh), p + "attn.wv"))
    return dx + _norm_back(spec, W, G, c["x_attn"], dh, p + "attn_norm")


def _back_blocks(spec, W, G, caches, layers, dx):
    """dL/d(input of the first block in `layers`) from dL/d(output of the last); accumulates into G."""
    for l, c in zip(reversed(list(layers)), reversed(caches)):
        dx = _block_backward(spec, W, G, c, l, dx)
    return dx


def _backward(spec, W, tape, dlogits, G):
    """Accumulate dL/dW into G (float64 dict) given dL/dlogits [T, V] for one sequence."""
    T = dlogits.shape[0]
    # LM head (no bias) and final norm
    head = "embed.weight" if spec["tie_embeddings"] else "lm_head.weight"
    G[head] += dlogits.T @ tape["h_final"]
    dx = _norm_back(spec, W, G, tape["x_final"], dlogits @ W[head], "norm")
    dx = _back_blocks(spec, W, G, tape["layers"], range(spec["layers"]), dx)
    np.add.at(G["embed.weight"], tape["tokens"], dx)
    if spec["position"] != "rope":
        G["pos_embed.weight"][:T] += dx


def loss_and_grads(spec, weights, tokens, targets):
    """(loss, {name: gradient}) for the standard decoder, by reverse-mode backprop in float64.

    Gradients have the weights' shapes and cover exactly the documented tensors
    (decoder.weight_shapes; extra tensors in `weights` are ignored). Raises
    NotImplementedError for three_phase, attn_res, loop and mlp.taper.
    """
    _check_standard(spec)
    _check_shapes(spec, weights)
    tok, tgt = _batch(spec, tokens, targets)
    shapes = ref.weight_shapes(spec)
    W = {n: np.asarray(weights[n], np.float64) for n in shapes}
    G = {n: np.zeros(s) for n, (s, _) in shapes.items()}
    N = tok.size
    total = 0.0
    for row, trow in zip(tok, tgt):
        logits, tape = forward_train(spec, W, row)
        total += float(np.sum(cross_entropy(logits, trow)))
        probs = ref.softmax(logits, axis=-1)
        probs[np.arange(len(trow)), trow] -= 1.0
        _backward(spec, W, tape, probs / N, G)
    return total / N, G


# ---------------------------------------------------------------- optimizer

def clip_by_global_norm(grads, max_norm):
    """(clipped, norm): norm = sqrt(sum of all squared entries) before clipping; if norm > max_norm
    every gradient is scaled by max_norm / norm (torch.nn.utils.clip_grad_norm_ uses
    max_norm / (norm + 1e-6); this uses the exact ratio), else returned unchanged (copied)."""
    norm = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads.values()))
    scale = max_norm / norm if norm > max_norm else 1.0
    return {n: np.asarray(g, np.float64) * scale for n, g in grads.items()}, norm


def lr_at(step, base_lr, warmup, total, min_lr):
    """Learning rate of optimizer update `step` (1-based: the first update is step 1).

    step < warmup:            base_lr * step / warmup (linear from 0 at step 0)
    warmup <= step <= total:  min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))
    step > total:             min_lr
    So lr_at(warmup) = base_lr and lr_at(total) = min_lr. Needs 0 <= warmup <= total;
    with warmup == total, step == total gives min_lr.
    """
    if not (0 <= warmup <= total):
        raise ValueError(f"need 0 <= warmup <= total, got warmup={warmup} total={total}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup:
        return base_lr * step / warmup
    if step >= total:
        return min_lr
    r = (step - warmup) / (total - warmup)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * r))


_NORMS = ("attn_norm", "mlp_norm", "norm", "prelude_norm")
_NO_DECAY_EXACT = ("injection.A_log", "injection.dt_bias", "injection.B")   # ARCHITECTURES.md s4.1 (Parcae)


def no_decay_names(spec, names):
    """The subset of `names` (in their order) that gets no weight decay.

    - every bias: names ending in ".bias" (linear biases, layernorm biases, LoopFormer's
      embedder / modulation biases);
    - every norm gain: "{attn_norm,mlp_norm,norm,prelude_norm}.weight" at any prefix, and the
      attn_res routing norms "....attn_res.{attn,mlp,attn_v}.norm", "attn_res_final.norm"
      (attn_res gate biases "....gate.bias" are biases; nulls, alphas, scalar gates and gate
      weights decay like the queries);
    - Parcae's injection.A_log, injection.dt_bias, injection.B (ARCHITECTURES.md s4.1).
    Everything else (embeddings, pos_embed, linear weights, lm_head, attn_res queries,
    three_phase rotation.theta (s3: decayed), coda_proj) is decayed. spec is accepted
    for the interface; the rule depends on names only.
    """
    out = []
    for n in names:
        parts = n.split(".")
        if (parts[-1] == "bias" or n in _NO_DECAY_EXACT
                or (len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in _NORMS)
                or re.fullmatch(r"(layers\.\d+\.attn_res\.(attn|mlp|attn_v)|attn_res_final)\.norm", n)):
            out.append(n)
    return out


def adamw_step(weights, grads, m, v, step, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
               no_decay=()):
    """One torch.optim.AdamW update (float64); returns (new weights, new m, new v).

    step: the 1-based update count t (bias corrections 1 - beta^t). m and v map names to
    the moment arrays (None or a missing name means zeros, i.e. the first step).
    Parameters named in no_decay get weight_decay 0. Order as in torch: decoupled decay
    p *= 1 - lr * wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    Only names present in grads are updated; other weights are passed through.
    """
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    m, v, nd = dict(m or {}), dict(v or {}), set(no_decay)
    new_w = {n: np.asarray(a, np.float64).copy() for n, a in weights.items()}
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    for n, g in grads.items():
        g = np.asarray(g, np.float64)
        p = new_w[n]
        if p.shape != g.shape:
            raise ValueError(f"gradient {n} has shape {list(g.shape)}, weight {list(p.shape)}")
        wd = 0.0 if n in nd else weight_decay
        p = p * (1.0 - lr * wd)
        mn = beta1 * (np.zeros_like(g) if m.get(n) is None else np.asarray(m[n], np.float64)) + (1 - beta1) * g
        vn = beta2 * (np.zeros_like(g) if v.get(n) is None else np.asarray(v[n], np.float64)) + (1 - beta2) * g * g
        new_w[n] = p - (lr / bc1) * mn / (np.sqrt(vn) / math.sqrt(bc2) + eps)
        m[n], v[n] = mn, vn
    return new_w, m, v


MUON_NS_COEFFS = (3.4445, -4.7750, 2.0315)
MUON_NS_STEPS = 5
MUON_NS_EPS = 1e-7


def _shape_of(x):
    """A shape from an array, a shape tuple, or a decoder.weight_shapes entry (shape, init)."""
    if hasattr(x, "shape"):
        return tuple(x.shape)
    x = tuple(x)
    if len(x) == 2 and isinstance(x[0], (tuple, list)):
        return tuple(x[0])
    return x


def muon_params(names_and_shapes):
    """The names (in their order) that Muon updates: name starts with "layers." and the
    parameter is 2-D (the blocks' attention / MLP projections, LoopFormer's modulation
    matrices, attn_res sigmoid_vector gate weights, ...). Everything else (embeddings,
    lm_head, pos_embed, norms, biases, 1-D vectors, 2-D matrices outside "layers.", e.g.
    Parcae's injection.B / coda_proj, Loopus' gate.*, LoopFormer's time/step embedders)
    stays with AdamW.

    names_and_shapes: a mapping name -> array / shape / decoder.weight_shapes entry, or an
    iterable of (name, shape-or-array) pairs.
    """
    items = names_and_shapes.items() if hasattr(names_and_shapes, "items") else names_and_shapes
    return [n for n, x in items if n.startswith("layers.") and len(_shape_of(x)) == 2]


def newton_schulz(G, steps=MUON_NS_STEPS, coeffs=MUON_NS_COEFFS, eps=MUON_NS_EPS):
    """Muon's quintic Newton-Schulz iteration on a 2-D matrix, float64, same shape out:
    X = G / (||G||_F + eps); transposed if rows > cols; `steps` x
    {A = X X^T; X = a X + (b A + c A A) X}; transposed back."""
    X = np.asarray(G, np.float64)
    if X.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {list(X.shape)}")
    a, b, c = coeffs
    X = X / (np.linalg.norm(X) + eps)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if tall else X


def muon_step(weights, grads, b, lr, momentum=0.95, weight_decay=0.1, no_decay=(), nesterov=True):
    """One Muon update (float64) of the parameters named in grads; returns (new weights, new b).

    lr is Muon's own learning rate (optimizer_step passes lr * muon_lr_scale). b maps names
    to momentum buffers (None or a missing name means zeros, the first step). For each
    W [m, n] with gradient G: B = mu B + G; U = G + mu B (nesterov=False: U = B);
    W *= 1 - lr wd (wd = 0 for names in no_decay); W -= lr sqrt(max(1, m / n)) newton_schulz(U).
    Every parameter in grads must be 2-D. Other weights (and buffers) are passed through.
    """
    b, nd = dict(b or {}), set(no_decay)
    new_w = {n: np.asarray(a, np.float64).copy() for n, a in weights.items()}
    for n, g in grads.items():
        g = np.asarray(g, np.float64)
        p = new_w[n]
        if p.shape != g.shape:
            raise ValueError(f"gradient {n} has shape {list(g.shape)}, weight {list(p.shape)}")
        if g.ndim != 2:
            raise ValueError(f"Muon updates 2-D parameters only; {n} has shape {list(g.shape)}")
        buf = momentum * (np.zeros_like(g) if b.get(n) is None else np.asarray(b[n], np.float64)) + g
        u = g + momentum * buf if nesterov else buf
        rows, cols = g.shape
        wd = 0.0 if n in nd else weight_decay
        new_w[n] = p * (1.0 - lr * wd) - lr * math.sqrt(max(1.0, rows / cols)) * newton_schulz(u)
        b[n] = buf
    return new_w, b


def optimizer_step(weights, grads, m, v, b, step, lr, optimizer="adamw", muon_names=None,
                   muon_momentum=0.95, muon_lr_scale=20.0, beta1=0.9, beta2=0.95, eps=1e-8,
                   weight_decay=0.1, no_decay=()):
    """One optimizer step of lathe's training (float64); returns (weights, m, v, b).

    grads: the (already clipped) gradients; m, v: AdamW moments of the AdamW parameters;
    b: Muon momentum buffers of the Muon parameters (None / missing names: zeros).
    optimizer="adamw": adamw_step on every parameter in grads (b is returned unchanged).
    optimizer="muon": the parameters in muon_names (default muon_params(weights)) that have
    gradients take muon_step with lr * muon_lr_scale and muon_momentum, the others
    adamw_step with lr (step is AdamW's bias-correction count). weight_decay and no_decay
    apply to both groups.
    """
    if optimizer == "adamw":
        w, m, v = adamw_step(weights, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, no_decay)
        return w, m, v, dict(b or {})
    if optimizer != "muon":
        raise ValueError(f"unknown optimizer {optimizer!r} (adamw or muon)")
    if muon_names is None:
        muon_names = muon_params(weights)
    mu_set = set(muon_names)
    g_adam = {n: g for n, g in grads.items() if n not in mu_set}
    g_muon = {n: g for n, g in grads.items() if n in mu_set}
    w, m, v = adamw_step(weights, g_adam, m, v, step, lr, beta1, beta2, eps, weight_decay, no_decay)
    w, b = muon_step(w, g_muon, b, lr * muon_lr_scale, muon_momentum, weight_decay, no_decay)
    return w, m, v, b


# ---------------------------------------------------------------- LoopUS random deep supervision (s4.3)
#
# ARCHITECTURES.md s4.3 "Training: random deep supervision [CODE]". E = the embedding (plus
# learned positions) and layers [0, P); R = layers [P, P+C); Dec = layers [P+C, L), the final
# norm and the head. advance(h) = gate(R(h), h) (one loop pass, no halting in training).
# supervised_loss(h) for one sequence, h [T, D] a constant (sg):
#   u = R(h); delta = u - h; h_new = gate(u, h)
#   z = w_q . LayerNorm(delta[T-1]) + b_q            (the confidence LOGIT; LN affine, eps 1e-5)
#   CE_new = mean_t CE(Dec(h_new)[t], targets[t]);  CE_old = sg(mean_t CE(Dec(h)[t], targets[t]))
#   acc = sg(mean_t [argmax Dec(h_new)[t] == targets[t]])
#   L = CE_new + beta SiLU(CE_new - CE_old) + BCE_logits(z, acc),
#   BCE_logits(z, a) = max(z, 0) - z a + log(1 + exp(-|z|)),  SiLU(x) = x sigmoid(x).

def loopus_supervision(spec):
    """{steps: NR, supervised: NS, beta: B} of a loopus spec, defaults filled in: steps =
    loop.iterations, supervised = min(5, steps), beta = 1.0 (decoder.loopus_supervision_spec)."""
    if not ref.is_loopus(spec):
        raise ValueError("loopus_supervision needs a loopus spec (loop.kind: loopus)")
    lp = spec["loop"]
    sup = lp.get("supervision")
    return dict(sup) if sup is not None else ref.loopus_supervision_spec(None, lp["iterations"])


def check_supervise(spec, supervise):
    """The supervised step indices S of one train step as a list of ints: non-empty, strictly
    increasing (sorted and distinct), each in [0, NR) with NR = loopus_supervision(spec)["steps"].
    A single int is accepted as [s]. (Any length 1 .. NR; the runtime draws NS of them.)"""
    nr = loopus_supervision(spec)["steps"]
    S = [supervise] if isinstance(supervise, (int, np.integer)) and not isinstance(supervise, bool) \
        else list(supervise)
    if not S:
        raise ValueError("supervise: need at least one supervised step index")
    for s in S:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < nr:
            raise ValueError(f"supervise: step index {s!r} is not an integer in [0, steps = {nr})")
    if any(b <= a for a, b in zip(S, S[1:])):
        raise ValueError(f"supervise: step indices must be sorted and distinct, got {S}")
    return [int(s) for s in S]


def _loopus_W(spec, weights):
    """float64 copies of the documented tensors of a loopus spec (shapes checked)."""
    if not ref.is_loopus(spec):
        raise ValueError("LoopUS training needs a loopus spec (loop.kind: loopus)")
    _check_shapes(spec, weights)
    return {n: np.asarray(weights[n], np.float64) for n in ref.weight_shapes(spec)}


def loopus_encode(spec, weights, tokens):
    """h_0 = E(tokens) [T, D] (float64) for one 1-D sequence: embedding (+ learned positions),
    then the encoder layers [0, P) (no norm after them, as in decoder.forward)."""
    W = _loopus_W(spec, weights)
    tok, _ = _batch(spec, tokens, tokens)
    if tok.shape[0] != 1:
        raise ValueError("loopus_encode takes one sequence [T]")
    return _loopus_encode(spec, W, tok[0])


def _loopus_encode(spec, W, tokens):
    T = len(tokens)
    x = W["embed.weight"][tokens]
    if spec["position"] != "rope":
        x = x + W["pos_embed.weight"][:T]
    prelude, _, _ = ref.loop_parts(spec)
    return _run_blocks(spec, W, x, prelude)[0]


def _loopus_pass(spec, W, h):
    """One pass of R and the selective gate from h [T, D]; a dict with the pieces backprop needs."""
    _, core, _ = ref.loop_parts(spec)
    u, caches = _run_blocks(spec, W, h, core)
    delta = u - h
    a = delta @ W["gate.down.weight"].T                           # [T, r]
    zg = a @ W["gate.up.weight"].T + W["gate.up.bias"]            # [T, D]
    dt = ref.softplus(zg)
    E = np.exp(W["gate.A_log"])
    abar = np.exp(-dt * E)
    h_new = ref.loopus_mix(u, h, abar)
    return dict(h=h, u=u, caches=caches, delta=delta, a=a, zg=zg, dt=dt, E=E, abar=abar, h_new=h_new)


def loopus_advance(spec, weights, h):
    """advance(h) = gate(R(h), h): h_{k+1} = Abar u + (1 - Abar) h_k with u = R(h_k) (s4.3), [T, D]."""
    W = _loopus_W(spec, weights)
    return _loopus_pass(spec, W, np.asarray(h, np.float64))["h_new"]


def _loopus_decode(spec, W, h):
    """(logits [T, V], tape): Dec = decoder layers [P+C, L), final norm, head, on h [T, D]."""
    _, _, coda = ref.loop_parts(spec)
    x, caches = _run_blocks(spec, W, h, coda)
    hf = _norm(spec, W, x, "norm")
    head = W["embed.weight"] if spec["tie_embeddings"] else W["lm_head.weight"]
    return hf @ head.T, {"caches": caches, "x_final": x, "h_final": hf}


def _loopus_decode_back(spec, W, G, tape, dlogits):
    """dL/dh (Dec's input) from dL/dlogits; accumulates the head, final norm and coda grads into G."""
    _, _, coda = ref.loop_parts(spec)
    head = "embed.weight" if spec["tie_embeddings"] else "lm_head.weight"
    G[head] += dlogits.T @ tape["h_final"]
    dx = _norm_back(spec, W, G, tape["x_final"], dlogits @ W[head], "norm")
    return _back_blocks(spec, W, G, tape["caches"], coda, dx)


def _silu_grad(x):
    s = float(ref.sigmoid(x))
    return s * (1.0 + x * (1.0 - s))


def bce_logits(z, a):
    """BCE_logits(z, a) = max(z, 0) - z a + log(1 + exp(-|z|)) (torch's binary_cross_entropy_with_logits)."""
    return max(z, 0.0) - z * a + math.log1p(math.exp(-abs(z)))


def _supervised(spec, W, h, targets, beta, ce_old, acc, want_grads):
    """(L, parts, G or None) for one sequence; see supervised_loss."""
    h = np.asarray(h, np.float64)
    T = h.shape[0]
    targets = np.asarray(targets, np.int64)
    if h.shape != (T, spec["d_model"]) or targets.shape != (T,) or T == 0:
        raise ValueError(f"supervised_loss: h must be [T, D] and targets [T] (T >= 1), got {list(h.shape)} and "
                         f"{list(targets.shape)}")
    if targets.min() < 0 or targets.max() >= spec["vocab"]:
        raise ValueError(f"supervised_loss: target ids must lie in [0, {spec['vocab']})")
    if beta is None:
        beta = loopus_supervision(spec)["beta"]
    ps = _loopus_pass(spec, W, h)
    eps_c = ref.LOOPUS_CONFIDENCE_EPS
    y = ref.layernorm(ps["delta"][-1], W["confidence.norm.weight"], W["confidence.norm.bias"], eps_c)
    z = float(W["confidence.weight"].reshape(-1) @ y + W["confidence.bias"].reshape(-1)[0])
    logits, tape = _loopus_decode(spec, W, ps["h_new"])
    ce_new = float(np.mean(cross_entropy(logits, targets)))
    if ce_old is None:
        ce_old = float(np.mean(cross_entropy(_loopus_decode(spec, W, h)[0], targets)))
    if acc is None:
        acc = float(np.mean(np.argmax(logits, axis=-1) == targets))
    d = ce_new - ce_old
    L = ce_new + beta * float(ref.silu(d)) + bce_logits(z, acc)
    parts = dict(ce_new=ce_new, ce_old=float(ce_old), acc=float(acc), z=z, h_new=ps["h_new"])
    if not want_grads:
        return L, parts, None
    G = {n: np.zeros_like(a) for n, a in W.items()}
    # L = CE_new + beta SiLU(CE_new - CE_old) + BCE(z, acc): dL/dCE_new and dL/dz
    dce = 1.0 + beta * _silu_grad(d)
    dz = float(ref.sigmoid(z)) - acc
    probs = ref.softmax(logits, axis=-1)
    probs[np.arange(T), targets] -= 1.0
    dh_new = _loopus_decode_back(spec, W, G, tape, probs * (dce / T))
    # h_new = Abar u + (1 - Abar) h  (h constant)
    du = ps["abar"] * dh_new
    dabar = ps["delta"] * dh_new
    # Abar = exp(-Dt E), E = exp(A_log)
    dE_ = -(dabar * ps["abar"] * ps["dt"])
    G["gate.A_log"] += dE_.sum(0) * ps["E"]
    ddt = -(dabar * ps["abar"]) * ps["E"]
    # Dt = softplus(zg), zg = (delta W_down^T) W_up^T + b
    dzg = ddt * ref.sigmoid(ps["zg"])
    G["gate.up.weight"] += dzg.T @ ps["a"]
    G["gate.up.bias"] += dzg.sum(0)
    da = dzg @ W["gate.up.weight"]
    G["gate.down.weight"] += da.T @ ps["delta"]
    ddelta = da @ W["gate.down.weight"]
    # z = w_q . LN(delta[T-1]) + b_q
    G["confidence.weight"] += dz * y[None, :]
    G["confidence.bias"] += dz
    dy = dz * W["confidence.weight"].reshape(-1)
    dlast, dg, db = _layernorm_back(ps["delta"][-1], dy, W["confidence.norm.weight"], eps_c)
    G["confidence.norm.weight"] += dg
    G["confidence.norm.bias"] += db
    ddelta[-1] += dlast
    # delta = u - h; u = R(h)  (dL/dh is dropped: h is a constant)
    du = du + ddelta
    _, core, _ = ref.loop_parts(spec)
    _back_blocks(spec, W, G, ps["caches"], core, du)
    return L, parts, G


def supervised_loss(spec, weights, h, targets, beta=None, ce_old=None, acc=None):
    """(L, parts) of s4.3's supervised step for one sequence, float64.

    h [T, D]: the loop state entering the supervised step (a constant); targets [T]. beta
    defaults to loopus_supervision(spec)["beta"]. ce_old / acc: use these values instead of
    computing CE(Dec(h)) and the token accuracy of Dec(h_new) (finite differences hold them
    at their unperturbed values; both are constants of the gradient anyway).
    parts: ce_new, ce_old, acc, z (the confidence logit, no sigmoid), h_new (= advance(h)).
    L = ce_new + beta SiLU(ce_new - ce_old) + BCE_logits(z, acc).
    """
    return _supervised(spec, _loopus_W(spec, weights), h, targets, beta, ce_old, acc, False)[:2]


def supervised_loss_and_grads(spec, weights, h, targets, beta=None, ce_old=None, acc=None):
    """(L, parts, {name: dL/dname}) for one sequence by reverse-mode backprop in float64 (see
    supervised_loss). Gradients cover every documented tensor: zero for the encoder's layers,
    the embedding (except a tied head) and learned positions, since h is a constant."""
    return _supervised(spec, _loopus_W(spec, weights), h, targets, beta, ce_old, acc, True)


def loopus_states(spec, weights, tokens, supervise=0):
    """[h_b]: h = advance^s(E(tokens_b)) [T, D] for each sequence (tokens [T] or [B, T]), the state
    that `lathe-run grad --supervise s` supervises."""
    W = _loopus_W(spec, weights)
    s = check_supervise(spec, supervise)
    if len(s) != 1:
        raise ValueError("loopus_states takes one supervised step index")
    tok, _ = _batch(spec, tokens, tokens)
    out = []
    for row in tok:
        h = _loopus_encode(spec, W, row)
        for _ in range(s[0]):
            h = _loopus_pass(spec, W, h)["h_new"]
        out.append(h)
    return out


def loopus_grad(spec, weights, tokens, targets, supervise=0):
    """(L, G, parts) of `lathe-run grad --supervise s` (s4.3): per sequence b, h_b = advance^s(E(tokens_b)),
    L_b, G_b = supervised_loss_and_grads(h_b); L = mean_b L_b, G = mean_b G_b; parts: per-b dicts."""
    W = _loopus_W(spec, weights)
    _, tgt = _batch(spec, tokens, targets)
    hs = loopus_states(spec, W, tokens, supervise)
    res = [_supervised(spec, W, h, t, None, None, None, True) for h, t in zip(hs, tgt)]
    B = len(res)
    L = sum(r[0] for r in res) / B
    G = {n: sum(r[2][n] for r in res) / B for n in W}
    return L, G, [r[1] for r in res]


def loopus_train_step(spec, weights, m, v, tokens, targets, supervise, lr, step, max_norm=1.0,
                      beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    """One `lathe-run train-step --supervise S0,S1,..` of LoopUS (s4.3), float64; returns
    (weights, m, v, info).

    tokens / targets: [T] or [B, T]; supervise: the sorted distinct step indices S
    (check_supervise); step: the 1-based train-step number t. h_b = E(tokens_b) with the
    weights at the start; k = 0; for each j, s in S: h_b = advance^(s-k)(h_b) with the current
    weights; L_b, G_b = supervised_loss_and_grads(h_b); h_b = advance(h_b) with the same
    weights (parts' h_new); G = mean_b G_b, clipped to global norm max_norm; one adamw_step
    (no_decay_names) at AdamW step (t - 1) len(S) + j + 1 with lr; k = s + 1.
    info: loss (mean over j and b of L_b), losses [[L_b] per j], grad_norms (pre-clip, per j),
    clipped (the clipped gradients per j), adam_steps, parts ([[per-b dicts] per j]).
    """
    S = check_supervise(spec, supervise)
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    W = _loopus_W(spec, weights)
    tok, tgt = _batch(spec, tokens, targets)
    nd = no_decay_names(spec, list(W))
    beta = loopus_supervision(spec)["beta"]
    hs = [_loopus_encode(spec, W, row) for row in tok]
    info = dict(losses=[], grad_norms=[], clipped=[], adam_steps=[], parts=[])
    k = 0
    for j, s in enumerate(S):
        for _ in range(s - k):
            hs = [_loopus_pass(spec, W, h)["h_new"] for h in hs]
        res = [_supervised(spec, W, h, t, beta, None, None, True) for h, t in zip(hs, tgt)]
        hs = [r[1]["h_new"] for r in res]
        B = len(res)
        G = {n: sum(r[2][n] for r in res) / B for n in W}
        Gc, norm = clip_by_global_norm(G, max_norm)
        t_adam = (step - 1) * len(S) + j + 1
        W, m, v = adamw_step(W, Gc, m, v, t_adam, lr, beta1, beta2, eps, weight_decay, nd)
        info["losses"].append([r[0] for r in res])
        info["grad_norms"].append(norm)
        info["clipped"].append(Gc)
        info["adam_steps"].append(t_adam)
        info["parts"].append([r[1] for r in res])
        k = s + 1
    info["loss"] = float(np.mean(info["losses"]))
    return W, m, v, info


# ---------------------------------------------------------------- CLI

def compare_grads(got, want, rtol, atol=0.0):
    """(ok, lines): per-tensor rel = max|got - want| / max(max|want|, 1e-12); a tensor
    passes if rel <= rtol, or if max|got - want| <= atol (for a gradient that is exactly
    zero in exact arithmetic, e.g. a key bias under softmax, where float32 leaves rounding
    noise that no relative measure can judge)."""
    ok, lines = True, []
    for n in sorted(want):
        b = np.asarray(want[n], np.float64)
        if n not in got:
            ok = False
            lines.append(f"MISSING  {n} shape={list(b.shape)}")
            continue
        a = np.asarray(got[n], np.float64)
        if a.shape != b.shape:
            ok = False
            lines.append(f"SHAPE    {n} got={list(a.shape)} want={list(b.shape)}")
            continue
        if not np.all(np.isfinite(a)):
            ok = False
            lines.append(f"NONFINITE {n}")
            continue
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        mref = float(np.max(np.abs(b))) if b.size else 0.0
        rel = err / max(mref, 1e-12)
        good = rel <= rtol or err <= atol
        ok &= good
        lines.append(f"{'OK      ' if good else 'MISMATCH'} {n} rel={rel:.3e} max_abs_err={err:.3e} "
                     f"max_abs_ref={mref:.3e}")
    for n in sorted(set(got) - set(want)):
        lines.append(f"EXTRA    {n} (ignored)")
    return ok, lines


def _parse_ids(s):
    rows = [[int(t) for t in r.split(",") if t.strip()] for r in s.split(";") if r.strip()]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every ';'-separated sequence must have the same length")
    return np.array(rows[0] if len(rows) == 1 else rows, np.int64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--weights", required=True, help="safetensors weights")
    ap.add_argument("--tokens", required=True, help="comma-separated ids; ';' separates sequences of a batch")
    ap.add_argument("--targets", required=True, help="same layout as --tokens")
    ap.add_argument("--out", help="write the reference gradients (float32) and 'loss' [1] here")
    ap.add_argument("--compare", help="safetensors gradient file to check against the reference")
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--atol", type=float, default=0.0,
                    help="also pass a tensor whose max abs error is within this")
    ap.add_argument("--supervise", type=int, default=None,
                    help="loopus: the supervised step index s (default 0), as lathe-run grad --supervise")
    args = ap.parse_args(argv)
    if not (args.out or args.compare):
        ap.error("give --out or --compare")
    spec = ref.load_spec(args.spec)
    if args.supervise is not None and not ref.is_loopus(spec):
        ap.error("--supervise is only for loopus specs")
    weights, _ = safetensors_np.load(args.weights)
    try:
        tokens, targets = _parse_ids(args.tokens), _parse_ids(args.targets)
        ref.check_weights(spec, weights)
        if ref.is_loopus(spec):
            L, G, _ = loopus_grad(spec, weights, tokens, targets, args.supervise or 0)
        else:
            L, G = loss_and_grads(spec, weights, tokens, targets)
    except (ValueError, NotImplementedError) as e:
        print(f"ERROR {e}")
        return 2
    want = dict(G, loss=np.array([L]))
    if args.out:
        safetensors_np.save(args.out, {n: np.asarray(a, np.float32) for n, a in want.items()},
                            {"format": "pt", "spec": spec["name"]})
        print(f"loss={L:.10g}; wrote {len(want)} tensors to {args.out}")
    if args.compare:
        got, _ = safetensors_np.load(args.compare)
        ok, lines = compare_grads(got, want, args.rtol, args.atol)
        for line in lines:
            print(line)
        print(("OK" if ok else "MISMATCH") + f" {len(want)} tensors, rtol={args.rtol:g}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
