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
- Only the standard decoder (every option of the contract's options table, taper
  excluded) has gradients; three_phase, attn_res, loop and mlp.taper raise
  NotImplementedError in loss_and_grads. With tie_embeddings the gradient of
  embed.weight is the sum of its input (gather) and LM-head uses.
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


def forward_train(spec, W, tokens):
    """(logits [T, V], tape) for one 1-D sequence, float64 weights W; the tape feeds _backward."""
    D, L, H, K = spec["d_model"], spec["layers"], spec["heads"], spec["kv_heads"]
    Dh, eps, base = D // H, spec["norm"]["eps"], spec["rope"]["base"]
    ln, bias = spec["norm"]["kind"] == "layernorm", spec["bias"]
    use_rope, kind = spec["position"] == "rope", spec["mlp"]["kind"]
    normalizer = {"softmax": ref.softmax, "softpick": ref.softpick}[spec["attention"]["normalizer"]]
    T = len(tokens)
    grp = np.arange(H) // (H // K)

    def norm(x, n):
        if ln:
            return ref.layernorm(x, W[n + ".weight"], W[n + ".bias"], eps)
        return ref.rmsnorm(x, W[n + ".weight"], eps)

    def lin(x, n):
        y = x @ W[n + ".weight"].T
        return y + W[n + ".bias"] if bias else y

    tape = {"tokens": tokens, "layers": []}
    x = W["embed.weight"][tokens]
    if not use_rope:
        x = x + W["pos_embed.weight"][:T]
    for l in range(L):
        p, c = f"layers.{l}.", {}
        c["x_attn"] = x
        h = c["h_attn"] = norm(x, p + "attn_norm")
        q = lin(h, p + "attn.wq").reshape(T, H, Dh)
        k = lin(h, p + "attn.wk").reshape(T, K, Dh)
        v = lin(h, p + "attn.wv").reshape(T, K, Dh)
        if use_rope:
            q, k = ref.rope(q, base), ref.rope(k, base)
        P = ref.attention_probs(q, k, H, K, normalizer)                  # [H, T, T]
        kh, vh = k[:, grp], v[:, grp]
        a = np.einsum("hts,shd->thd", P, vh).reshape(T, H * Dh)
        c.update(q=q, kh=kh, vh=vh, P=P, a=a)
        if spec["attention"]["normalizer"] == "softpick":
            S = np.einsum("thd,shd->hts", q, kh) / np.sqrt(Dh)
            c["S"] = np.where(np.triu(np.ones((T, T), bool), k=1)[None], -np.inf, S)
        x = x + lin(a, p + "attn.wo")
        c["x_mlp"] = x
        h = c["h_mlp"] = norm(x, p + "mlp_norm")
        if kind == "swiglu":
            g, u = lin(h, p + "mlp.w_gate"), lin(h, p + "mlp.w_up")
            m = ref.silu(g) * u
            c.update(g=g, u=u)
        else:
            u = lin(h, p + "mlp.w_up")
            m = ref.gelu_tanh(u) if kind == "gelu" else ref.relu2(u)
            c["u"] = u
        c["m"] = m
        x = x + lin(m, p + "mlp.w_down")
        tape["layers"].append(c)
    tape["x_final"] = x
    hf = tape["h_final"] = norm(x, "norm")
    head = W["embed.weight"] if spec["tie_embeddings"] else W["lm_head.weight"]
    return hf @ head.T, tape


# ---------------------------------------------------------------- backward

def _backward(spec, W, tape, dlogits, G):
    """Accumulate dL/dW into G (float64 dict) given dL/dlogits [T, V] for one sequence."""
    D, L, H, K = spec["d_model"], spec["layers"], spec["heads"], spec["kv_heads"]
    Dh, eps, base = D // H, spec["norm"]["eps"], spec["rope"]["base"]
    ln, bias = spec["norm"]["kind"] == "layernorm", spec["bias"]
    use_rope, kind = spec["position"] == "rope", spec["mlp"]["kind"]
    T = dlogits.shape[0]
    rep = H // K

    def norm_back(x, dy, n):
        """dL/dx for y = norm(x, n); accumulates the gain (and bias) gradients."""
        g = W[n + ".weight"]
        if ln:
            xc = x - np.mean(x, axis=-1, keepdims=True)
            r = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
            xhat = xc * r
            G[n + ".bias"] += dy.sum(0)
            G[n + ".weight"] += (dy * xhat).sum(0)
            dxh = dy * g
            return r * (dxh - np.mean(dxh, axis=-1, keepdims=True)
                        - xhat * np.mean(dxh * xhat, axis=-1, keepdims=True))
        r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
        xhat = x * r
        G[n + ".weight"] += (dy * xhat).sum(0)
        dxh = dy * g
        return r * (dxh - xhat * np.mean(dxh * xhat, axis=-1, keepdims=True))

    def lin_back(x, dy, n):
        G[n + ".weight"] += dy.T @ x
        if bias:
            G[n + ".bias"] += dy.sum(0)
        return dy @ W[n + ".weight"]

    # LM head (no bias) and final norm
    head = "embed.weight" if spec["tie_embeddings"] else "lm_head.weight"
    G[head] += dlogits.T @ tape["h_final"]
    dx = norm_back(tape["x_final"], dlogits @ W[head], "norm")

    for l in reversed(range(L)):
        p, c = f"layers.{l}.", tape["layers"][l]
        # MLP: x = x_mlp + lin(m, w_down)
        dm = lin_back(c["m"], dx, p + "mlp.w_down")
        if kind == "swiglu":
            g, u = c["g"], c["u"]
            sg = 1.0 / (1.0 + np.exp(-g))
            dg = dm * u * sg * (1.0 + g * (1.0 - sg))      # silu'(g) = s (1 + g (1 - s))
            dh = lin_back(c["h_mlp"], dg, p + "mlp.w_gate") + lin_back(c["h_mlp"], dm * g * sg, p + "mlp.w_up")
        else:
            dh = lin_back(c["h_mlp"], dm * _act_grad(kind, c["u"]), p + "mlp.w_up")
        dx = dx + norm_back(c["x_mlp"], dh, p + "mlp_norm")
        # attention: x = x_attn + lin(a, wo)
        da = lin_back(c["a"], dx, p + "attn.wo").reshape(T, H, Dh)
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
        dh = (lin_back(h, dq.reshape(T, H * Dh), p + "attn.wq")
              + lin_back(h, dk.reshape(T, K * Dh), p + "attn.wk")
              + lin_back(h, dv.reshape(T, K * Dh), p + "attn.wv"))
        dx = dx + norm_back(c["x_attn"], dh, p + "attn_norm")

    np.add.at(G["embed.weight"], tape["tokens"], dx)
    if not use_rope:
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
    args = ap.parse_args(argv)
    if not (args.out or args.compare):
        ap.error("give --out or --compare")
    spec = ref.load_spec(args.spec)
    weights, _ = safetensors_np.load(args.weights)
    try:
        tokens, targets = _parse_ids(args.tokens), _parse_ids(args.targets)
        ref.check_weights(spec, weights)
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
