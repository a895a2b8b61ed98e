#!/usr/bin/python3
"""Self-check of train.py (the numpy training reference).

  /usr/bin/python3 test/reference/test_train_selfcheck.py

Checks loss_and_grads against central finite differences (float64) for several option
combinations, against torch autograd (float64) when torch imports, and the optimizer
pieces (clip_by_global_norm, lr_at, adamw_step vs torch.optim.AdamW), Muon (newton_schulz's
spectrum, muon_step / optimizer_step vs a loop-based version, muon_params, the momentum
recurrence, rank-1 gradients), check_train_step.py's Muon mode on emulated checkpoints, the CLI,
and the attn_res entropy bonus (loss = mean CE - lambda * mean_routing_entropy: the uniform value
ln N at zero queries, the objective's composition, finite differences in the queries), and LoopUS
random deep supervision (ARCHITECTURES.md s4.3: the float64 tape against decoder.forward,
supervised_loss_and_grads against finite differences, the objective's composition, the
loop.supervision defaults, loopus_train_step against hand-rolled AdamW steps, and
check_grad_fd.py / check_train_step.py --supervise on emulated lathe outputs).
Prints one line per check and 'train selfcheck: N checks passed'; exit 1 on any failure.
"""
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import decoder as ref  # noqa: E402
import safetensors_np  # noqa: E402
import train  # noqa: E402

try:
    import torch
    torch.set_num_threads(2)
except Exception as e:  # noqa: BLE001
    torch = None
    TORCH_ERR = f"{type(e).__name__}: {e}"

CHECKS = []


def check(name):
    def deco(fn):
        CHECKS.append((name, fn))
        return fn
    return deco


def small(**kw):
    base = dict(name="t", vocab=32, d_model=16, layers=2, heads=4, kv_heads=2, max_seq=16,
                mlp={"kind": "swiglu", "width": 24})
    base.update(kw)
    return ref.make_spec(**base)


# The option combinations: every option of the contract's options table appears.
CONFIGS = [
    ("rmsnorm+swiglu+softmax+rope+GQA(4/2)+untied", dict()),
    ("layernorm+gelu+softmax+biases+learned+tied+MHA", dict(
        kv_heads=4, norm={"kind": "layernorm"}, mlp={"kind": "gelu", "width": 24}, bias=True,
        position="learned", tie_embeddings=True)),
    ("rmsnorm+relu2+softpick+rope+GQA(4/2)+biases+untied", dict(
        mlp={"kind": "relu2", "width": 24}, attention={"normalizer": "softpick"}, bias=True)),
    ("layernorm+swiglu+softpick+rope+MQA(4/1)+biases+tied, B=2", dict(
        kv_heads=1, norm={"kind": "layernorm"}, attention={"normalizer": "softpick"}, bias=True,
        tie_embeddings=True)),
    ("rmsnorm+gelu+softpick+learned+GQA(4/2)+untied", dict(
        mlp={"kind": "gelu", "width": 24}, attention={"normalizer": "softpick"}, position="learned")),
]
T = 6


def data(spec, seed, B=None):
    rng = np.random.default_rng(100 + seed)
    shape = (T,) if B is None else (B, T)
    return rng.integers(0, spec["vocab"], shape), rng.integers(0, spec["vocab"], shape)


def weights(spec, seed):
    # scale 10: std 0.2 so attention is far from uniform; biases become nonzero; gains jittered
    return ref.init_weights(spec, seed, scale=10.0, norm_jitter=0.3)


def fd_check(spec, w32, tok, tgt, per_tensor=12, h=1e-5, seed=0):
    """Central differences of train.loss (float64 weights) on a random subset + the largest entry."""
    W = {n: a.astype(np.float64) for n, a in w32.items()}
    L0, G = train.loss_and_grads(spec, W, tok, tgt)
    assert abs(train.loss(spec, W, tok, tgt) - L0) <= 1e-12 * abs(L0), "loss() (float64 path) != loss_and_grads"
    assert abs(train.loss(spec, w32, tok, tgt) - L0) <= 1e-12 * abs(L0), "loss() (decoder.forward) != loss_and_grads"
    assert set(G) == set(ref.weight_shapes(spec)), sorted(set(G) ^ set(ref.weight_shapes(spec)))
    rng = np.random.default_rng(seed)
    worst, worst_name, n_entries = 0.0, "", 0
    for n, g in G.items():
        assert g.shape == W[n].shape and g.dtype == np.float64, n
        flat = rng.choice(g.size, size=min(per_tensor, g.size), replace=False).tolist()
        flat.append(int(np.argmax(np.abs(g))))
        scale = max(float(np.max(np.abs(g))), 1e-6)   # wk.bias is exactly 0 under softmax without RoPE
        for i in flat:
            idx = np.unravel_index(i, g.shape)
            old = W[n][idx]
            W[n][idx] = old + h
            lp = train.loss(spec, W, tok, tgt)
            W[n][idx] = old - h
            lm = train.loss(spec, W, tok, tgt)
            W[n][idx] = old
            fd = (lp - lm) / (2 * h)
            err = abs(fd - g[idx]) / scale
            n_entries += 1
            if err > worst:
                worst, worst_name = err, f"{n}{list(idx)}"
            assert err < 1e-6, f"{n}{list(idx)}: analytic {g[idx]:.10e} fd {fd:.10e} (err/max|g| {err:.2e})"
        assert np.max(np.abs(g)) > 0, f"{n}: gradient identically zero"
    return f"{len(G)} tensors, {n_entries} entries, worst err/max|g| {worst:.1e} ({worst_name}), loss {L0:.4f}"


for _i, (_label, _kw) in enumerate(CONFIGS):
    @check(f"grads vs central finite differences: {_label}")
    def _(_i=_i, _kw=_kw):
        s = small(**_kw)
        tok, tgt = data(s, _i, B=2 if "B=2" in CONFIGS[_i][0] else None)
        return fd_check(s, weights(s, _i), tok, tgt, seed=_i)


@check("forward_train logits equal decoder.forward (float32 weights) for every configuration")
def _():
    worst = 0.0
    for i, (_, kw) in enumerate(CONFIGS):
        s = small(**kw)
        w = weights(s, i)
        tok, _ = data(s, i)
        a = ref.forward(s, w, tok)
        b, _ = train.forward_train(s, {n: x.astype(np.float64) for n, x in w.items()}, tok)
        rel = np.max(np.abs(a - b)) / np.max(np.abs(a))
        assert rel < 1e-13, (i, rel)
        worst = max(worst, rel)
    return f"worst rel {worst:.1e}"


@check("[B, T] batch: loss and grads are the mean over the B*T positions (= mean of per-row results)")
def _():
    s = small(**CONFIGS[1][1])
    w = weights(s, 3)
    tok, tgt = data(s, 3, B=3)
    L, G = train.loss_and_grads(s, w, tok, tgt)
    rows = [train.loss_and_grads(s, w, tok[b], tgt[b]) for b in range(3)]
    assert abs(L - np.mean([r[0] for r in rows])) < 1e-13
    for n in G:
        ref_g = np.mean([r[1][n] for r in rows], axis=0)
        assert np.max(np.abs(G[n] - ref_g)) <= 1e-13 * max(np.max(np.abs(ref_g)), 1e-2), n   # floor: wk.bias is 0
    # the loss is the plain mean of per-position cross-entropy of decoder.forward's logits
    ce = []
    for b in range(3):
        lg = ref.forward(s, w, tok[b])
        ce += [-(lg[t, tgt[b, t]] - np.log(np.sum(np.exp(lg[t])))) for t in range(T)]
    assert abs(L - np.mean(ce)) < 1e-12
    return f"loss {L:.6f}"


@check("unsupported spec keys raise NotImplementedError (three_phase, attn_res, loop, taper)")
def _():
    specs = [small(three_phase={"phases": 2}), small(attn_res={"kind": "delta"}),
             small(layers=3, loop={"kind": "parcae", "prelude": 1, "core": 1, "coda": 1, "iterations": 2}),
             small(layers=2, loop={"kind": "loopformer", "iterations": 2}),
             small(mlp={"kind": "swiglu", "width": 32, "taper": {"multiple": 8}})]
    for s in specs:
        w = ref.init_weights(s, 0)
        try:
            train.loss_and_grads(s, w, [1, 2], [2, 3])
        except NotImplementedError:
            continue
        raise AssertionError(f"no NotImplementedError for {[k for k in ('three_phase', 'attn_res', 'loop') if k in s]}")
    return f"{len(specs)} specs refused"


# ---------------------------------------------------------------- attn_res entropy bonus (ARCHITECTURES.md s2.3)

# (label, attn_res without entropy_bonus, layers): every kind, with and without null_source (delta / delta_block).
ENTROPY_CASES = [
    ("delta L=3", {"kind": "delta"}, 3),
    ("delta L=3 null", {"kind": "delta", "null_source": True}, 3),
    ("delta L=2 null+gate+delta_v", {"kind": "delta", "null_source": True, "gate": "sigmoid_scalar", "delta_v": True}, 2),
    ("full L=2", {"kind": "full"}, 2),
    ("full L=3", {"kind": "full"}, 3),
    ("block L=4 N=2", {"kind": "block", "blocks": 2}, 4),
    ("block L=3 N=1", {"kind": "block", "blocks": 1}, 3),
    ("delta_block L=4 N=2", {"kind": "delta_block", "blocks": 2}, 4),
    ("delta_block L=4 N=2 null+delta_v", {"kind": "delta_block", "blocks": 2, "null_source": True, "delta_v": True}, 4),
]


def _uniform_hbar(spec):
    """mean of ln(N_candidates) over the routing sites, from attn_res_source_counts alone: a sublayer
    with >= 2 sources routes (N = sources + 1 with null_source), delta_v adds a second site at
    every routed attention sublayer (even s), full / block add the final site (no null there)."""
    ar = spec["attn_res"]
    counts, final = ref.attn_res_source_counts(spec)
    null = 1 if ar.get("null_source", False) else 0
    Ns = []
    for s_, c in enumerate(counts):
        if c >= 2:
            Ns.append(c + null)
            if ar.get("delta_v", False) and s_ % 2 == 0:
                Ns.append(c + null)
    if final is not None and final >= 2:
        Ns.append(final)
    return sum(math.log(n) for n in Ns) / len(Ns), len(Ns)


def _zero_queries(w):
    return {n: (np.zeros_like(a) if n.endswith(".query") else a) for n, a in w.items()}


def _hbar_loop(spec, w, tok):
    """Hbar by plain loops over rows, sites, positions and candidates (math.log), from forward's trace."""
    total, count = 0.0, 0
    for row in np.atleast_2d(tok):
        tr = {}
        ref.forward(spec, w, row, trace=tr)
        for a in tr["routing_alpha"]:
            for t in range(a.shape[1]):
                total += -sum(float(p) * math.log(float(p)) for p in a[:, t] if p > 0)
                count += 1
    return total / count


def _ce(spec, w, tok, tgt):
    lg = np.stack([ref.forward(spec, w, row) for row in tok])
    return float(np.mean(train.cross_entropy(lg, tgt)))


@check("entropy bonus (a): zero pseudo-queries make every site uniform, so mean_routing_entropy = mean ln(N_candidates) "
       "from attn_res_source_counts (delta / full / block / delta_block, with and without null_source, delta_v)")
def _():
    notes = []
    for label, ar, L in ENTROPY_CASES:
        s = small(layers=L, attn_res=ar)
        w = _zero_queries(weights(s, 40))
        names = {n for n in w if n.endswith(".query")}
        hand = ({f"layers.{l}.attn_res.{site}.query" for _, l, site in ref.attn_res_sites(s) + ref.attn_res_v_sites(s)}
                | ({"attn_res_final.query"} if ref.attn_res_has_final(s) else set()))
        assert names == hand and names, (label, names ^ hand)
        ref.check_weights(s, w)
        tok, tgt = data(s, 40, B=2)
        want, nsites = _uniform_hbar(s)
        got = train.mean_routing_entropy(s, w, tok)
        assert abs(got - want) < 1e-12, (label, got, want)
        assert abs(train.mean_routing_entropy(s, w, tok[0]) - want) < 1e-12, label      # [T] input
        sl = small(layers=L, attn_res=dict(ar, entropy_bonus=0.5))
        assert abs(train.loss(sl, w, tok, tgt) - (_ce(s, w, tok, tgt) - 0.5 * want)) < 1e-12, label
        notes.append(f"{label.split()[0]} {nsites} sites {want:.4f}")
    return "; ".join(notes[::2])


@check("entropy bonus (b): loss with lambda = 0.5 is mean CE - 0.5 Hbar ([B, T] and [T]); lambda 0 / absent / no attn_res "
       "give the plain CE; Hbar equals a per-token loop; random queries give Hbar strictly below the uniform value")
def _():
    notes = []
    for i, (label, ar, L) in enumerate(ENTROPY_CASES):
        s0 = small(layers=L, attn_res=ar)
        w = weights(s0, 50 + i)
        tok, tgt = data(s0, 50 + i, B=2)
        ce = _ce(s0, w, tok, tgt)
        hb = train.mean_routing_entropy(s0, w, tok)
        assert abs(hb - _hbar_loop(s0, w, tok)) < 1e-12, (label, hb)
        uni, _ = _uniform_hbar(s0)
        assert 0 < hb < uni - 1e-3, (label, hb, uni)
        assert train.loss(s0, w, tok, tgt) == ce, label
        assert train.loss(small(layers=L, attn_res=dict(ar, entropy_bonus=0)), w, tok, tgt) == ce, label
        sl = small(layers=L, attn_res=dict(ar, entropy_bonus=0.5))
        got = train.loss(sl, w, tok, tgt)
        assert abs(got - (ce - 0.5 * hb)) < 1e-12, (label, got, ce - 0.5 * hb)
        got1 = train.loss(sl, w, tok[1], tgt[1])
        want1 = _ce(s0, w, tok[1:], tgt[1:]) - 0.5 * train.mean_routing_entropy(s0, w, tok[1])
        assert abs(got1 - want1) < 1e-12, label
        # the batch Hbar is the mean of the per-row values (equal T, equal site count per row)
        assert abs(hb - np.mean([train.mean_routing_entropy(s0, w, r) for r in tok])) < 1e-12, label
        assert abs(train.mean_routing_entropy(sl, w, tok) - hb) < 1e-15, "lambda must not change Hbar"
        notes.append(f"{label.split()[0]} H {hb:.3f} < {uni:.3f}")
    s = small()
    w = weights(s, 59)
    tok, tgt = data(s, 59, B=2)
    assert train.mean_routing_entropy(s, w, tok) == 0.0 and train.loss(s, w, tok, tgt) == _ce(s, w, tok, tgt)
    return "; ".join(notes[::3])


@check("entropy bonus (c): central differences of Hbar in single query entries are nonzero for random queries and "
       "stable in the step; for full's final query they equal the hand gradient mean -alpha_n (ln alpha_n + H) K_n[j]")
def _():
    def fd(s, w, tok, name, j, h):
        wp, wm = dict(w), dict(w)
        wp[name], wm[name] = w[name].copy(), w[name].copy()
        wp[name][j] += np.float32(h)
        wm[name][j] -= np.float32(h)
        step = float(wp[name][j]) - float(wm[name][j])            # the float32 step actually taken
        return (train.mean_routing_entropy(s, wp, tok) - train.mean_routing_entropy(s, wm, tok)) / step

    notes = []
    for label, ar, L, names in (("delta L=3 null", {"kind": "delta", "null_source": True}, 3,
                                 ["layers.1.attn_res.attn.query", "layers.0.attn_res.mlp.query"]),
                                ("full L=2", {"kind": "full"}, 2, ["layers.0.attn_res.mlp.query", "attn_res_final.query"]),
                                ("block L=4 N=2", {"kind": "block", "blocks": 2}, 4,
                                 ["layers.2.attn_res.attn.query", "attn_res_final.query"]),
                                ("delta_block L=4 N=2 delta_v", {"kind": "delta_block", "blocks": 2, "delta_v": True}, 4,
                                 ["layers.2.attn_res.attn_v.query", "layers.3.attn_res.mlp.query"])):
        s = small(layers=L, attn_res=dict(ar, entropy_bonus=0.5))
        w = weights(s, 60)
        tok, _ = data(s, 60, B=2)
        for name in names:
            for j in (0, 5):
                d1, d2 = fd(s, w, tok, name, j, 1e-2), fd(s, w, tok, name, j, 2e-3)
                assert abs(d2) > 1e-5, (label, name, j, d2)
                assert abs(d1 - d2) < 2e-2 * abs(d2), (label, name, j, d1, d2)
            notes.append(f"{name.split('.query')[0]}[5] {d2:.2e}")
        # full's final site routes nothing downstream: only its own alpha moves with its query
        if ar["kind"] == "full":
            g, eps = w["attn_res_final.norm"].astype(np.float64), s["attn_res"]["eps"]
            grad, n_terms = np.zeros(s["d_model"]), 0
            for row in tok:
                tr = {}
                ref.forward(s, w, row, trace=tr)
                a = tr["routing_alpha"][-1]                                   # [2L + 1, T]
                K = ref.rmsnorm(np.stack([tr["h0"]] + tr["o"]), g, eps)       # [2L + 1, T, D]
                H = -np.sum(a * np.log(a), axis=0)
                grad += np.einsum("nt,ntd->d", -a * (np.log(a) + H), K)
                n_terms += len(tr["routing_alpha"]) * a.shape[1]
            grad /= n_terms
            for j in range(0, s["d_model"], 3):
                f = fd(s, w, tok, "attn_res_final.query", j, 1e-3)
                assert abs(f - grad[j]) < 1e-5 * np.max(np.abs(grad)), (j, f, grad[j])
            notes.append(f"final-query hand gradient |g|max {np.max(np.abs(grad)):.2e}")
    return "; ".join(notes)


# ---------------------------------------------------------------- torch second opinion

def torch_loss(spec, w, tok, tgt):
    """An independent float64 torch implementation of the contract's standard decoder + CE."""
    D, L, H, K = spec["d_model"], spec["layers"], spec["heads"], spec["kv_heads"]
    Dh, eps, base = D // H, spec["norm"]["eps"], spec["rope"]["base"]
    P = {n: torch.tensor(a.astype(np.float64), requires_grad=True) for n, a in w.items()}
    ln, bias = spec["norm"]["kind"] == "layernorm", spec["bias"]

    def norm(x, n):
        if ln:
            return torch.nn.functional.layer_norm(x, (D,), P[n + ".weight"], P[n + ".bias"], eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * P[n + ".weight"]

    def lin(x, n):
        return torch.nn.functional.linear(x, P[n + ".weight"], P[n + ".bias"] if bias else None)

    def rope(x):   # [B, T, h, Dh], rotate-half
        t = torch.arange(x.shape[1], dtype=torch.float64)
        f = base ** (-2.0 * torch.arange(Dh // 2, dtype=torch.float64) / Dh)
        ang = torch.outer(t, f)[None, :, None, :]
        c, s = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
        rot = torch.cat([-x[..., Dh // 2:], x[..., :Dh // 2]], -1)
        return x * c + rot * s

    tok_t, tgt_t = torch.tensor(np.atleast_2d(tok)), torch.tensor(np.atleast_2d(tgt))
    B, Tn = tok_t.shape
    x = P["embed.weight"][tok_t]
    if spec["position"] == "learned":
        x = x + P["pos_embed.weight"][:Tn]
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    for l in range(L):
        p = f"layers.{l}."
        h = norm(x, p + "attn_norm")
        q = lin(h, p + "attn.wq").view(B, Tn, H, Dh)
        k = lin(h, p + "attn.wk").view(B, Tn, K, Dh)
        v = lin(h, p + "attn.wv").view(B, Tn, K, Dh)
        if spec["position"] == "rope":
            q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // K, dim=2), v.repeat_interleave(H // K, dim=2)
        sc = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(Dh)
        if spec["attention"]["normalizer"] == "softmax":
            A = torch.softmax(sc.masked_fill(~causal, float("-inf")), -1)
        else:   # naive softpick, masked entries excluded
            e = torch.where(causal, torch.expm1(sc), torch.zeros_like(sc))
            A = torch.relu(e) / (e.abs().sum(-1, keepdim=True) + 1e-8)
        a = torch.einsum("bhts,bshd->bthd", A, v).reshape(B, Tn, H * Dh)
        x = x + lin(a, p + "attn.wo")
        h = norm(x, p + "mlp_norm")
        kind = spec["mlp"]["kind"]
        if kind == "swiglu":
            m = torch.nn.functional.silu(lin(h, p + "mlp.w_gate")) * lin(h, p + "mlp.w_up")
        elif kind == "gelu":
            m = torch.nn.functional.gelu(lin(h, p + "mlp.w_up"), approximate="tanh")
        else:
            m = torch.relu(lin(h, p + "mlp.w_up")) ** 2
        x = x + lin(m, p + "mlp.w_down")
    head = P["embed.weight"] if spec["tie_embeddings"] else P["lm_head.weight"]
    logits = norm(x, "norm") @ head.T
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_t.reshape(-1))
    loss.backward()
    return loss.item(), {n: t.grad.numpy() for n, t in P.items()}


@check("grads vs torch autograd (float64), every configuration")
def _():
    if torch is None:
        return f"SKIPPED: import torch failed ({TORCH_ERR})"
    worst = 0.0
    for i, (_, kw) in enumerate(CONFIGS):
        s = small(**kw)
        w = weights(s, i)
        tok, tgt = data(s, i, B=2)
        L, G = train.loss_and_grads(s, w, tok, tgt)
        Lt, Gt = torch_loss(s, w, tok, tgt)
        assert abs(L - Lt) < 1e-12 * abs(Lt), (i, L, Lt)
        assert set(G) == set(Gt)
        for n in G:
            # denominators floored at 1e-6: softmax is shift-invariant, so without RoPE the key bias
            # has an exactly-zero gradient (both sides give rounding noise ~1e-17 there)
            rel = np.max(np.abs(G[n] - Gt[n])) / max(np.max(np.abs(Gt[n])), 1e-6)
            assert rel < 1e-10, (i, n, rel)
            worst = max(worst, rel)
    return f"{len(CONFIGS)} configs, B=2, worst rel {worst:.1e}"


# ---------------------------------------------------------------- optimizer pieces

@check("clip_by_global_norm: norm, scaling above the threshold, identity below (and vs torch clip_grad_norm_)")
def _():
    rng = np.random.default_rng(1)
    g = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(5,)), "c": rng.normal(size=(2, 2, 2))}
    want = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
    c, n = train.clip_by_global_norm(g, 1.0)
    assert abs(n - want) < 1e-12 * want
    cn = math.sqrt(sum(float(np.sum(x * x)) for x in c.values()))
    assert abs(cn - 1.0) < 1e-12, cn
    assert all(np.allclose(c[k], g[k] / want, rtol=1e-14, atol=0) for k in g)
    c2, n2 = train.clip_by_global_norm(g, 2 * want)
    assert n2 == n and all(np.array_equal(c2[k], g[k]) for k in g)
    note = ""
    if torch is not None:
        ts = [torch.tensor(x) for x in g.values()]
        for t in ts:
            t.grad = t.clone()
        tn = float(torch.nn.utils.clip_grad_norm_(ts, 1.0))
        assert abs(tn - n) < 1e-12 * n
        assert all(np.allclose(t.grad.numpy(), c[k], rtol=1e-5) for t, k in zip(ts, g))   # torch: /(norm + 1e-6)
        note = "; torch agrees"
    return f"norm {n:.4f}{note}"


@check("lr_at: 0 at step 0, linear warmup, base_lr at warmup, cosine midpoint, min_lr at and after total")
def _():
    b, mn, wu, tot = 3e-4, 3e-5, 10, 110
    assert train.lr_at(0, b, wu, tot, mn) == 0.0
    assert abs(train.lr_at(1, b, wu, tot, mn) - b / 10) < 1e-18
    assert abs(train.lr_at(5, b, wu, tot, mn) - b / 2) < 1e-18
    assert abs(train.lr_at(wu, b, wu, tot, mn) - b) < 1e-18
    assert abs(train.lr_at(60, b, wu, tot, mn) - (b + mn) / 2) < 1e-15
    assert abs(train.lr_at(tot, b, wu, tot, mn) - mn) < 1e-18
    assert train.lr_at(tot + 7, b, wu, tot, mn) == mn
    seq = [train.lr_at(t, b, wu, tot, mn) for t in range(tot + 1)]
    assert all(x < y for x, y in zip(seq[:wu], seq[1:wu + 1])) and all(x >= y for x, y in zip(seq[wu:], seq[wu + 1:]))
    assert train.lr_at(0, b, 0, tot, mn) == b and abs(train.lr_at(tot, b, 0, tot, mn) - mn) < 1e-18
    return f"lr(1)={seq[1]:.1e} lr(10)={seq[10]:.1e} lr(60)={seq[60]:.3e} lr(110)={seq[110]:.1e}"


@check("no_decay_names: biases, norm gains, attn_res norms, Parcae A_log/dt_bias/B; everything else decays")
def _():
    s = small(**CONFIGS[1][1])      # layernorm + biases + learned + tied
    names = list(ref.weight_shapes(s))
    nd = set(train.no_decay_names(s, names))
    want = {n for n in names if n.endswith(".bias") or n.endswith("norm.weight")}
    assert nd == want, sorted(nd ^ want)
    assert {"embed.weight", "pos_embed.weight", "layers.0.attn.wq.weight"} <= set(names) - nd
    sp = small(layers=3, loop={"kind": "parcae", "prelude": 1, "core": 1, "coda": 1, "iterations": 2})
    pn = list(ref.weight_shapes(sp))
    pnd = set(train.no_decay_names(sp, pn))
    for n in ("injection.A_log", "injection.dt_bias", "injection.B", "prelude_norm.weight", "norm.weight"):
        assert n in pnd, n
    assert "coda_proj.weight" not in pnd and "lm_head.weight" not in pnd
    sa = small(attn_res={"kind": "full"}, three_phase=None)
    an = list(ref.weight_shapes(sa))
    and_ = set(train.no_decay_names(sa, an))
    assert "attn_res_final.norm" in and_ and "layers.1.attn_res.attn.norm" in and_
    assert "attn_res_final.query" not in and_
    sv = small(attn_res={"kind": "delta", "null_source": True, "gate": "sigmoid_vector", "delta_v": True},
               three_phase=None)
    vn = [n for n in ref.weight_shapes(sv) if "attn_res" in n]
    vnd = set(train.no_decay_names(sv, vn))
    assert {"layers.1.attn_res.attn_v.norm", "layers.1.attn_res.attn_v.gate.bias", "layers.1.attn_res.mlp.norm"} <= vnd
    assert not vnd & {"layers.1.attn_res.attn_v.query", "layers.1.attn_res.attn_v.null",
                      "layers.1.attn_res.attn.gate.weight"}, vnd
    st = small(three_phase={"phases": 2})
    assert "layers.0.rotation.theta" not in train.no_decay_names(st, list(ref.weight_shapes(st)))
    return f"{len(nd)}/{len(names)} standard names without decay"


def _torch_adamw(w, grads, lrs, nd, **kw):
    params = {n: torch.tensor(a.astype(np.float64), requires_grad=True) for n, a in w.items()}
    groups = [{"params": [params[n] for n in w if n not in nd], "weight_decay": kw["weight_decay"]},
              {"params": [params[n] for n in w if n in nd], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(kw["beta1"], kw["beta2"]), eps=kw["eps"])
    for lr in lrs:
        for gr in opt.param_groups:
            gr["lr"] = lr
        for n, p in params.items():
            p.grad = torch.tensor(grads[n])
        opt.step()
    return {n: p.detach().numpy() for n, p in params.items()}


@check("adamw_step vs torch.optim.AdamW: 1 step and 3 steps (lr from lr_at) on real gradients; no-decay params not decayed")
def _():
    s = small(**CONFIGS[1][1])
    w = weights(s, 5)
    tok, tgt = data(s, 5)
    _, G = train.loss_and_grads(s, w, tok, tgt)
    nd = train.no_decay_names(s, list(w))
    kw = dict(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    lrs = [train.lr_at(t, 1e-2, 2, 10, 1e-3) for t in (1, 2, 3)]
    results = {}
    for nsteps in (1, 3):
        W, m, v = {n: a.astype(np.float64) for n, a in w.items()}, None, None
        for t in range(1, nsteps + 1):
            W, m, v = train.adamw_step(W, G, m, v, t, lrs[t - 1], no_decay=nd, **kw)
        results[nsteps] = W
    # zero gradient: a decayed param shrinks by exactly (1 - lr wd), a no-decay param is unchanged
    Z = {n: np.zeros_like(g) for n, g in G.items()}
    W0 = {n: a.astype(np.float64) for n, a in w.items()}
    Wz, _, _ = train.adamw_step(W0, Z, None, None, 1, 0.5, no_decay=nd, **kw)
    for n in w:
        want = W0[n] if n in nd else W0[n] * (1 - 0.5 * 0.1)
        assert np.array_equal(Wz[n], want), n
    assert len(nd) > 0 and len(nd) < len(w)
    if torch is None:
        return f"SKIPPED torch comparison: import torch failed ({TORCH_ERR}); zero-grad decay check passed"
    worst = 0.0
    for nsteps in (1, 3):
        tw = _torch_adamw(w, G, lrs[:nsteps], set(nd), **kw)
        for n in w:
            d = np.max(np.abs(results[nsteps][n] - tw[n]))
            assert d < 1e-13 * max(1.0, np.max(np.abs(tw[n]))), (nsteps, n, d)
            worst = max(worst, d)
    # and the torch run with decay on everything differs on the no-decay params
    tw_all = _torch_adamw(w, G, lrs[:1], set(), **kw)
    assert any(np.max(np.abs(tw_all[n] - results[1][n])) > 1e-6 for n in nd if np.any(w[n] != 0))
    return f"worst |diff| {worst:.1e}; lrs {[f'{x:.1e}' for x in lrs]}; {len(nd)} no-decay of {len(w)}"


# ---------------------------------------------------------------- Muon

NS_ABC = (3.4445, -4.7750, 2.0315)


def _f5(s):
    """The quintic applied 5 times to a scalar singular value."""
    a, b, c = NS_ABC
    for _ in range(5):
        s = a * s + b * s ** 3 + c * s ** 5
    return s


@check("newton_schulz: singular values are f^5(s / (|G|_F + 1e-7)) (same singular vectors), in [0.68, 1.16] "
       "for random tall / wide / square matrices (where s >= 2e-3 |G|_F); the scalar band")
def _():
    # the scalar map's band: [0.6818, 1.2024] on s in [2e-3, 1], [0.6818, 1.1344] on [1e-2, 1]
    xs = np.linspace(2e-3, 1.0, 200001)
    ys = _f5(xs)
    assert 0.68 < ys.min() < 0.685 and 1.19 < ys.max() < 1.21, (ys.min(), ys.max())
    ys2 = ys[xs >= 1e-2]
    assert 0.68 < ys2.min() and ys2.max() < 1.14, (ys2.min(), ys2.max())
    notes = []
    for shape, seed in (((96, 32), 0), ((32, 96), 1), ((48, 48), 2), ((7, 3), 3), ((3, 7), 4), ((5, 5), 5),
                        ((1, 16), 6), ((16, 1), 7)):
        G = np.random.default_rng(seed).normal(size=shape)
        X = train.newton_schulz(G)
        assert X.shape == G.shape and X.dtype == np.float64
        U, s, Vt = np.linalg.svd(G, full_matrices=False)
        want = U @ np.diag(_f5(s / (np.linalg.norm(G) + 1e-7))) @ Vt
        assert np.max(np.abs(X - want)) < 1e-12, (shape, np.max(np.abs(X - want)))
        sv = np.linalg.svd(X, compute_uv=False)           # descending, as s
        sn = s / np.linalg.norm(G)
        if shape[0] != shape[1]:
            assert sn.min() > 2e-3, (shape, sn.min())   # rectangular Gaussians: well conditioned
        # a square Gaussian's smallest singular values can be tiny (here 2.7e-4 of |G|_F at 48x48):
        # those lie in the linear regime f^5(s) ~ 485 s, below the band; the band holds above 2e-3
        band = sv[sn >= 2e-3]
        assert band.size >= min(shape) - 3 and np.all(sv[sn < 2e-3] < 0.68), (shape, sn)
        assert 0.68 <= band.min() and band.max() <= 1.16, (shape, band.min(), band.max())
        # independent of the scale of G (up to the 1e-7) and equivariant under transposition
        assert np.max(np.abs(train.newton_schulz(G * 1e3) - X)) < 1e-6
        assert np.max(np.abs(train.newton_schulz(G.T) - X.T)) < 1e-12
        notes.append(f"{shape[0]}x{shape[1]}:[{band.min():.3f},{band.max():.3f}]"
                     + (f"+{int(np.sum(sn < 2e-3))} below (min {sv.min():.3f})" if np.any(sn < 2e-3) else ""))
    # a rank-deficient input keeps its null space: zero singular values stay 0
    Gr = np.random.default_rng(8).normal(size=(12, 3)) @ np.random.default_rng(9).normal(size=(3, 10))
    svr = np.linalg.svd(train.newton_schulz(Gr), compute_uv=False)
    assert np.all(svr[3:] < 1e-12) and np.all((svr[:3] > 0.68) & (svr[:3] < 1.16)), svr
    assert np.array_equal(train.newton_schulz(np.zeros((4, 6))), np.zeros((4, 6)))
    return f"scalar band on [2e-3, 1]: [{ys.min():.4f}, {ys.max():.4f}]; " + " ".join(notes)


def _slow_matmul(A, B):
    n, k = len(A), len(B)
    m = len(B[0])
    return [[sum(A[i][p] * B[p][j] for p in range(k)) for j in range(m)] for i in range(n)]


def _slow_T(A):
    return [[A[i][j] for i in range(len(A))] for j in range(len(A[0]))]


def _slow_muon(W, G, B, lr, mu, wd):
    """Muon on one matrix with Python loops and lists (Keller Jordan's recipe, written out)."""
    rows, cols = len(W), len(W[0])
    Bn = [[mu * B[i][j] + G[i][j] for j in range(cols)] for i in range(rows)]
    U = [[G[i][j] + mu * Bn[i][j] for j in range(cols)] for i in range(rows)]
    fro = math.sqrt(sum(U[i][j] ** 2 for i in range(rows) for j in range(cols)))
    X = [[U[i][j] / (fro + 1e-7) for j in range(cols)] for i in range(rows)]
    if rows > cols:
        X = _slow_T(X)
    a, b, c = NS_ABC
    for _ in range(5):
        A = _slow_matmul(X, _slow_T(X))
        AA = _slow_matmul(A, A)
        Bm = [[b * A[i][j] + c * AA[i][j] for j in range(len(A))] for i in range(len(A))]
        BX = _slow_matmul(Bm, X)
        X = [[a * X[i][j] + BX[i][j] for j in range(len(X[0]))] for i in range(len(X))]
    if rows > cols:
        X = _slow_T(X)
    scale = math.sqrt(max(1.0, rows / cols))
    Wn = [[W[i][j] * (1 - lr * wd) - lr * scale * X[i][j] for j in range(cols)] for i in range(rows)]
    return Wn, Bn


def _slow_adamw(p, g, m, v, t, lr, wd, b1=0.9, b2=0.95, eps=1e-8):
    p, g, m, v = (np.asarray(x, np.float64).ravel().tolist() for x in (p, g, m, v))
    out = []
    for i in range(len(p)):
        m[i] = b1 * m[i] + (1 - b1) * g[i]
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
        mh, vh = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
        out.append(p[i] * (1 - lr * wd) - lr * mh / (math.sqrt(vh) + eps))
    return out, m, v


def _muon_toy(seed=0):
    """Weights and two gradients of a toy parameter set: Muon tall / wide / square matrices, and
    AdamW's embedding, 1-D gains and biases and a 2-D matrix outside layers."""
    rng = np.random.default_rng(seed)
    shapes = {"embed.weight": (10, 4), "layers.0.attn.wq.weight": (6, 4), "layers.0.attn.wq.bias": (6,),
              "layers.0.mlp.w_up.weight": (4, 7), "layers.0.mlp.w_down.weight": (5, 5),
              "layers.0.attn_norm.weight": (4,), "coda_proj.weight": (4, 4), "norm.weight": (4,)}
    W = {n: rng.normal(size=s) * 0.5 for n, s in shapes.items()}
    Gs = [{n: rng.normal(size=s) for n, s in shapes.items()} for _ in range(3)]
    return W, Gs


@check("optimizer_step(optimizer='muon') equals a slow loop-based Muon + AdamW over 2 steps (float64)")
def _():
    W, Gs = _muon_toy(0)
    nd = ["layers.0.attn.wq.bias", "layers.0.attn_norm.weight", "norm.weight",
          "layers.0.mlp.w_down.weight"]      # a no-decay Muon matrix exercises wd = 0 on that path too
    mu, scale, wd = 0.9, 15.0, 0.1
    lrs = (0.02, 0.015)
    w, m, v, b = W, None, None, None
    for t, lr in enumerate(lrs, start=1):
        w, m, v, b = train.optimizer_step(w, Gs[t - 1], m, v, b, t, lr, optimizer="muon", muon_momentum=mu,
                                          muon_lr_scale=scale, weight_decay=wd, no_decay=nd)
    muon = train.muon_params(W)
    assert muon == ["layers.0.attn.wq.weight", "layers.0.mlp.w_up.weight", "layers.0.mlp.w_down.weight"], muon
    assert set(b) == set(muon) and set(m) == set(v) == set(W) - set(muon), (sorted(b), sorted(m))
    worst = 0.0
    for n in W:
        decay = 0.0 if n in nd else wd
        if n in muon:
            Ws, Bs = W[n].tolist(), np.zeros(W[n].shape).tolist()
            for t, lr in enumerate(lrs, start=1):
                Ws, Bs = _slow_muon(Ws, Gs[t - 1][n].tolist(), Bs, lr * scale, mu, decay)
            want, want_s = np.array(Ws), {"b": np.array(Bs)}
            assert np.max(np.abs(b[n] - want_s["b"])) < 1e-13, n
        else:
            p, ms, vs = W[n].ravel().tolist(), [0.0] * W[n].size, [0.0] * W[n].size
            for t, lr in enumerate(lrs, start=1):
                p, ms, vs = _slow_adamw(p, Gs[t - 1][n], ms, vs, t, lr, decay)
            want = np.array(p).reshape(W[n].shape)
            assert np.max(np.abs(m[n].ravel() - ms)) < 1e-15 and np.max(np.abs(v[n].ravel() - vs)) < 1e-15, n
        d = float(np.max(np.abs(w[n] - want)))
        assert d < 1e-12, (n, d)
        worst = max(worst, d)
    # a Muon step actually moved the matrices, by about lr_muon (singular values ~1)
    dq = W["layers.0.attn.wq.weight"] * (1 - lrs[0] * scale * wd) - train.optimizer_step(
        W, Gs[0], None, None, None, 1, lrs[0], optimizer="muon", muon_momentum=mu, muon_lr_scale=scale,
        weight_decay=wd, no_decay=nd)[0]["layers.0.attn.wq.weight"]
    sv = np.linalg.svd(dq / (lrs[0] * scale * math.sqrt(6 / 4)), compute_uv=False)
    assert 0.68 <= sv.min() and sv.max() <= 1.21, sv
    return f"{len(muon)} Muon + {len(W) - len(muon)} AdamW params, worst |diff| {worst:.1e}"


@check("optimizer_step: 'adamw' equals adamw_step; 'muon' leaves AdamW params as adamw_step; bad inputs refused")
def _():
    W, Gs = _muon_toy(1)
    nd = ["norm.weight", "layers.0.attn_norm.weight", "layers.0.attn.wq.bias"]
    wa, ma, va = train.adamw_step(W, Gs[0], None, None, 1, 0.01, no_decay=nd)
    w1, m1, v1, b1 = train.optimizer_step(W, Gs[0], None, None, None, 1, 0.01, no_decay=nd)
    assert b1 == {} and all(np.array_equal(w1[n], wa[n]) and np.array_equal(m1[n], ma[n]) for n in W)
    w2, m2, v2, b2 = train.optimizer_step(W, Gs[0], None, None, None, 1, 0.01, optimizer="muon", no_decay=nd)
    muon = set(train.muon_params(W))
    for n in W:
        if n not in muon:
            assert np.array_equal(w2[n], wa[n]) and np.array_equal(v2[n], va[n]), n
        else:
            assert n not in m2 and not np.allclose(w2[n], wa[n]), n
    # defaults: momentum 0.95, lr scale 20, weight decay 0.1
    n = "layers.0.attn.wq.weight"
    want = W[n] * (1 - 0.2 * 0.1) - 0.2 * math.sqrt(6 / 4) * train.newton_schulz(Gs[0][n] * 1.95)
    assert np.max(np.abs(w2[n] - want)) < 1e-14 and np.array_equal(b2[n], Gs[0][n])
    for bad, exc in ((lambda: train.optimizer_step(W, Gs[0], None, None, None, 1, 0.01, optimizer="sgd"), ValueError),
                     (lambda: train.muon_step(W, {"norm.weight": Gs[0]["norm.weight"]}, None, 0.1), ValueError),
                     (lambda: train.newton_schulz(np.ones((2, 2, 2))), ValueError)):
        try:
            bad()
        except exc:
            continue
        raise AssertionError("not refused")
    return "ok"


@check("muon_params: 2-D 'layers.*' matrices only (GPT-2-like names; LoopFormer, Parcae, Loopus, attn_res extras)")
def _():
    s = small(**CONFIGS[1][1])      # layernorm + gelu + biases + learned positions + tied: GPT-2-like
    shapes = ref.weight_shapes(s)
    got = train.muon_params(shapes)
    want = [f"layers.{l}.{t}.weight" for l in range(2)
            for t in ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w_up", "mlp.w_down")]
    assert got == want, got
    # the same from arrays and from (name, shape) pairs
    w = ref.init_weights(s, 0)
    assert train.muon_params(w) == want and train.muon_params([(n, sh) for n, (sh, _) in shapes.items()]) == want
    rest = set(shapes) - set(got)
    assert {"embed.weight", "pos_embed.weight", "norm.weight", "norm.bias", "layers.0.attn.wq.bias",
            "layers.1.mlp_norm.weight"} <= rest
    su = small()                    # untied: lm_head (2-D, outside layers) stays AdamW; swiglu's w_gate is Muon
    gu = train.muon_params(ref.weight_shapes(su))
    assert "lm_head.weight" not in gu and "layers.1.mlp.w_gate.weight" in gu and len(gu) == 14
    lf = train.muon_params(ref.weight_shapes(small(layers=2, loop={"kind": "loopformer", "iterations": 2})))
    assert {f"layers.{l}.mod.{k}.weight" for l in range(2) for k in ref.LOOPFORMER_MODS} <= set(lf), lf
    assert not any(n.startswith(("time_embed", "step_embed")) or n.endswith(".bias") for n in lf), lf
    pc = ref.weight_shapes(small(layers=3, loop={"kind": "parcae", "prelude": 1, "core": 1, "coda": 1,
                                                 "iterations": 2}))
    pm = train.muon_params(pc)
    assert "injection.B" not in pm and "coda_proj.weight" not in pm and len(pm) == 21
    lp = train.muon_params(ref.weight_shapes(small(layers=3, loop={"kind": "loopus", "prelude": 1, "core": 1,
                                                                   "coda": 1, "iterations": 2})))
    assert len(lp) == 21 and all(n.startswith("layers.") for n in lp), lp    # gate.*, confidence.weight: AdamW
    sv = small(attn_res={"kind": "delta", "null_source": True, "gate": "sigmoid_vector", "delta_v": True})
    am = train.muon_params(ref.weight_shapes(sv))
    assert "layers.1.attn_res.attn_v.gate.weight" in am and "layers.1.attn_res.attn_v.query" not in am
    assert train.muon_params({"layers.0.x": (2, 3, 4), "layersX.w": (3, 3), "layers.0.y": (5,)}) == []
    return f"{len(got)}/{len(shapes)} GPT-2-like params; LoopFormer {sum('.mod.' in n for n in lf)} mod matrices"


@check("Muon momentum over 3 steps: B3 = G3 + mu G2 + mu^2 G1 and step 3 moves along NS(G3 + mu B3)")
def _():
    W, Gs = _muon_toy(2)
    n, mu, scale, wd = "layers.0.mlp.w_up.weight", 0.8, 20.0, 0.1
    lrs = (1e-3, 2e-3, 1.5e-3)
    w, m, v, b = W, None, None, None
    hist = []
    for t in (1, 2, 3):
        hist.append((w, b))
        w, m, v, b = train.optimizer_step(w, Gs[t - 1], m, v, b, t, lrs[t - 1], optimizer="muon",
                                          muon_momentum=mu, muon_lr_scale=scale, weight_decay=wd)
        if t == 1:
            assert np.array_equal(b[n], Gs[0][n])
        if t == 2:
            assert np.max(np.abs(b[n] - (Gs[1][n] + mu * Gs[0][n]))) < 1e-15
    G1, G2, G3 = (g[n] for g in Gs)
    B3 = G3 + mu * G2 + mu * mu * G1
    assert np.max(np.abs(b[n] - B3)) < 1e-14
    w2 = hist[2][0][n]
    lm = lrs[2] * scale
    want = w2 * (1 - lm * wd) - lm * math.sqrt(max(1, 4 / 7)) * train.newton_schulz(G3 + mu * B3)
    assert np.max(np.abs(w[n] - want)) < 1e-14
    # not the plain (non-Nesterov) buffer direction, and not an EMA buffer
    plain = w2 * (1 - lm * wd) - lm * train.newton_schulz(B3)
    assert np.max(np.abs(w[n] - plain)) > 1e-2 * lm
    # step 1: U = (1 + mu) G1, so the direction is NS(G1) (NS is scale-invariant up to the 1e-7)
    w1 = hist[1][0][n]
    l1 = lrs[0] * scale
    assert np.max(np.abs(w1 - (W[n] * (1 - l1 * wd) - l1 * train.newton_schulz((1 + mu) * G1)))) < 1e-14
    assert np.max(np.abs(w1 - (W[n] * (1 - l1 * wd) - l1 * train.newton_schulz(G1)))) < 1e-6 * l1
    return f"|B3| {np.linalg.norm(B3):.3f}; step-3 Nesterov vs plain differ by {np.max(np.abs(w[n] - plain)) / lm:.3f} lr_muon"


@check("Muon with mu = 0 on a rank-1 gradient s u v^T moves W along -u v^T by lr_muon sqrt(max(1, m/n)) f^5(s/(s+1e-7))")
def _():
    notes = []
    for (rows, cols), seed, s in (((8, 3), 0, 1.0), ((3, 8), 1, 0.37), ((6, 6), 2, 25.0), ((1, 5), 3, 1e-3)):
        rng = np.random.default_rng(seed)
        u, v = rng.normal(size=rows), rng.normal(size=cols)
        u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
        G = s * np.outer(u, v)
        n = "layers.0.attn.wq.weight"
        W = {n: rng.normal(size=(rows, cols))}
        lr = 0.05
        w, b = train.muon_step(W, {n: G}, None, lr, momentum=0.0, weight_decay=0.0)
        assert np.array_equal(b[n], G)
        d = w[n] - W[n]
        direction = -d / np.linalg.norm(d)
        assert np.max(np.abs(direction - np.outer(u, v))) < 1e-12, (rows, cols)
        sigma = _f5(s / (s + 1e-7))
        assert 0.68 <= sigma <= 1.21, sigma
        assert abs(np.linalg.norm(d) - lr * math.sqrt(max(1, rows / cols)) * sigma) < 1e-13
        # with decay: the decay is applied to W before the update
        wd_w, _ = train.muon_step(W, {n: G}, None, lr, momentum=0.0, weight_decay=0.1)
        assert np.max(np.abs(wd_w[n] - (W[n] * (1 - lr * 0.1) + d))) < 1e-15
        notes.append(f"{rows}x{cols}: sigma {sigma:.4f}")
    return "; ".join(notes)


def _emulated_lathe_run(spec, w0, tok, tgt, lr, nsteps, d, tag, optimizer="muon", mu=0.95, scale=20.0,
                        bug=None, noise=1e-6, muon_noise=None):
    """Checkpoints as lathe-run train-step would write them (float32), made by the reference with
    float32-sized noise on the gradients (relative to each tensor's largest; muon_noise: on the
    Muon parameters' instead), or with a deliberate bug. Returns the paths."""
    rng = np.random.default_rng(7)
    w = {n: a.astype(np.float64) for n, a in w0.items()}
    m = v = b = None
    nd = train.no_decay_names(spec, list(w))
    muon = train.muon_params(w) if optimizer == "muon" else []
    paths = []
    for t in range(1, nsteps + 1):
        _, G = train.loss_and_grads(spec, w, tok, tgt)
        G, _ = train.clip_by_global_norm(G, 1.0)
        G = {n: g + (noise if muon_noise is None or n not in muon else muon_noise) * np.max(np.abs(g))
             * rng.normal(size=g.shape) for n, g in G.items()}
        if bug == "ema":      # B = mu B + (1 - mu) G
            G_m = {n: (1 - mu) * g if n in muon else g for n, g in G.items()}
            b_in = b
        else:
            G_m, b_in = G, b
        if bug == "nodecay":
            nd_t = nd + muon
        else:
            nd_t = nd
        sc = 10.0 if bug == "scale" else scale
        if bug == "plain":    # no Nesterov: U = B
            w_a, m, v = train.adamw_step(w, {n: g for n, g in G.items() if n not in muon}, m, v, t, lr,
                                         no_decay=nd_t)
            w, b = train.muon_step(w_a, {n: G[n] for n in muon}, b, lr * sc, mu, 0.1, nd_t, nesterov=False)
        else:
            w, m, v, b = train.optimizer_step(w, G_m, m, v, b_in, t, lr, optimizer=optimizer, muon_momentum=mu,
                                              muon_lr_scale=sc, no_decay=nd_t)
        ck = {n: a.astype(np.float32) for n, a in w.items()}
        ck.update({"adam.m." + n: a.astype(np.float32) for n, a in m.items()})
        ck.update({"adam.v." + n: a.astype(np.float32) for n, a in v.items()})
        ck.update({"muon.b." + n: a.astype(np.float32) for n, a in (b or {}).items()})
        ck["optimizer.step"] = np.array([t], np.int64)
        path = os.path.join(d, f"{tag}{t}.safetensors")
        safetensors_np.save(path, ck)
        paths.append(path)
        w = {n: ck[n].astype(np.float64) for n in w}   # the next step starts from the checkpoint
        m = {n: ck["adam.m." + n].astype(np.float64) for n in m}
        v = {n: ck["adam.v." + n].astype(np.float64) for n in v}
        b = {n: ck["muon.b." + n].astype(np.float64) for n in (b or {})}
    return paths


@check("check_train_step.py --optimizer muon: passes emulated float32 checkpoints, fails on no decay / no Nesterov / "
       "wrong lr scale / EMA momentum / wrong momentum; positional AdamW usage unchanged")
def _():
    s = small()
    w0 = weights(s, 4)
    tok, tgt = data(s, 4, B=2)
    tok_s = ";".join(",".join(map(str, r)) for r in tok)
    tgt_s = ";".join(",".join(map(str, r)) for r in tgt)
    script = os.path.join(HERE, "..", "e2e", "inputs", "check_train_step.py")
    lr = 0.01
    with tempfile.TemporaryDirectory() as d:
        S, W0 = os.path.join(d, "s.yaml"), os.path.join(d, "w0.safetensors")
        open(S, "w").write("name: t\nvocab: 32\nd_model: 16\nlayers: 2\nheads: 4\nkv_heads: 2\nmax_seq: 16\n"
                           "mlp: {kind: swiglu, width: 24}\n")
        assert ref.load_spec(S) == s
        safetensors_np.save(W0, w0)

        def run(paths, *flags, before=()):
            return subprocess.run([sys.executable, script, *before, S, W0, tok_s, tgt_s, str(lr), *paths, *flags],
                                  capture_output=True, text=True)
        ok = _emulated_lathe_run(s, w0, tok, tgt, lr, 3, d, "ok")
        r = run(ok, "--optimizer", "muon")
        assert r.returncode == 0 and "OK 3 steps, " in r.stdout and "(14 Muon, " in r.stdout, r.stdout + r.stderr
        r = run(ok, before=("--optimizer", "muon"))               # flags anywhere
        assert r.returncode == 0, r.stdout + r.stderr
        r = run(ok)                                               # AdamW replay of a Muon run: no adam.m of Muon params
        assert r.returncode == 1 and "MISMATCH step 1: adam.m.layers." in r.stdout and " missing from " in r.stdout, r.stdout
        alt = _emulated_lathe_run(s, w0, tok, tgt, lr, 2, d, "alt", mu=0.9, scale=10.0)
        r = run(alt, "--optimizer", "muon", "--muon-lr-scale", "10", "--muon-momentum", "0.9")
        assert r.returncode == 0, r.stdout + r.stderr
        r = run(alt, "--optimizer", "muon", "--muon-momentum", "0.9")   # lr scale 20 expected, 10 used
        assert r.returncode == 1 and "MISMATCH step 1" in r.stdout, r.stdout
        r = run(alt, "--optimizer", "muon", "--muon-lr-scale", "10")     # momentum 0.95 expected
        assert r.returncode == 1 and "MISMATCH step 2 muon.b." in r.stdout, r.stdout
        r = run(alt, "--muon-lr-scale", "10")
        assert r.returncode == 2 and "need --optimizer muon" in r.stderr, r.stderr
        fails = []
        for bug, where in (("nodecay", "MISMATCH step 1 layers."), ("scale", "MISMATCH step 1 layers."),
                           ("ema", "MISMATCH step 1 muon.b."), ("plain", "MISMATCH step 2 layers.")):
            r = run(_emulated_lathe_run(s, w0, tok, tgt, lr, 2, d, bug, bug=bug), "--optimizer", "muon")
            assert r.returncode == 1 and where in r.stdout, (bug, r.stdout + r.stderr)
            fails.append(f"{bug}: {r.stdout.strip().splitlines()[-1]}")
        ad = _emulated_lathe_run(s, w0, tok, tgt, lr, 2, d, "adam", optimizer="adamw")
        r = run(ad)
        assert r.returncode == 0 and "OK 2 steps, " in r.stdout and "and their moments" in r.stdout, r.stdout + r.stderr
        r = run(ad, "--optimizer", "muon")                        # an AdamW run does not pass as Muon
        assert r.returncode == 1 and "MISMATCH step 1: muon.b.layers." in r.stdout and " missing from " in r.stdout, r.stdout
        r = run(ad[1:], "--optimizer", "muon")                    # a checkpoint of the wrong step
        assert r.returncode == 1 and "MISMATCH step 1: checkpoint says 2" in r.stdout, r.stdout
    return "; ".join(fails)


# ---------------------------------------------------------------- CLI

@check("CLI: --out writes every gradient + loss [1] (float32); --compare passes on it, fails on perturbed / missing / reshaped")
def _():
    s_kw = CONFIGS[2][1]
    with tempfile.TemporaryDirectory() as d:
        S, W, G, G2 = (os.path.join(d, n) for n in ("s.yaml", "w.safetensors", "g.safetensors", "g2.safetensors"))
        open(S, "w").write("name: t\nvocab: 32\nd_model: 16\nlayers: 2\nheads: 4\nkv_heads: 2\nmax_seq: 16\n"
                           "mlp: {kind: relu2, width: 24}\nattention: {normalizer: softpick}\nbias: true\n")
        s = ref.load_spec(S)
        assert s == small(**s_kw), "yaml spec differs from the test spec"
        w = weights(s, 9)
        safetensors_np.save(W, w)
        cli = [sys.executable, os.path.join(HERE, "train.py"), "--spec", S, "--weights", W,
               "--tokens", "1,5,31,0,7,7", "--targets", "5,31,0,7,7,2"]
        r = subprocess.run(cli + ["--out", G], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        g, _ = safetensors_np.load(G)
        L, Gr = train.loss_and_grads(s, w, [1, 5, 31, 0, 7, 7], [5, 31, 0, 7, 7, 2])
        assert set(g) == set(Gr) | {"loss"} and g["loss"].shape == (1,)
        assert all(a.dtype == np.float32 for a in g.values())
        assert abs(g["loss"][0] - L) < 1e-6 * L
        assert all(np.array_equal(g[n], Gr[n].astype(np.float32)) for n in Gr)

        def run_cmp(gg, *extra):
            safetensors_np.save(G2, gg)
            return subprocess.run(cli + ["--compare", G2, *extra], capture_output=True, text=True)
        r = run_cmp(g)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sum(line.startswith("OK       ") for line in r.stdout.splitlines()) == len(g), r.stdout
        bad = dict(g)
        n = "layers.1.attn.wk.weight"
        bad[n] = g[n].copy()
        bad[n][0, 0] += 2e-3 * np.max(np.abs(g[n]))
        r = run_cmp(bad)
        assert r.returncode == 1 and f"MISMATCH {n}" in r.stdout, r.stdout
        r = run_cmp(bad, "--rtol", "1e-2")
        assert r.returncode == 0, r.stdout
        miss = {k: a for k, a in g.items() if k != "norm.weight"}
        r = run_cmp(miss)
        assert r.returncode == 1 and "MISSING  norm.weight" in r.stdout, r.stdout
        shp = dict(g, **{"norm.weight": g["norm.weight"][:-1]})
        r = run_cmp(shp)
        assert r.returncode == 1 and "SHAPE    norm.weight" in r.stdout, r.stdout
        # a ';'-separated batch
        r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), "--spec", S, "--weights", W,
                            "--tokens", "1,2,3;4,5,6", "--targets", "2,3,4;5,6,7", "--out", G],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        gb, _ = safetensors_np.load(G)
        Lb, _ = train.loss_and_grads(s, w, [[1, 2, 3], [4, 5, 6]], [[2, 3, 4], [5, 6, 7]])
        assert abs(gb["loss"][0] - Lb) < 1e-6 * Lb
    return f"{len(g)} tensors"


@check("loopformer loop.shortcut objective: CE(long) + 0.1 CE(short) + 0.1 MSE(long, short) from two hand forwards ([B, T] and [T]); "
       "long is [1/M] * M, not the spec's trajectory; frozen_long_final at the unperturbed value gives the same value, "
       "another target moves only the MSE term; shortcut required / refused; without the key the loss is unchanged")
def _():
    lp = {"kind": "loopformer", "iterations": 4, "trajectory": [0.4, 0.3, 0.2, 0.1]}
    s_sc = small(loop=dict(lp, shortcut=True))
    s_plain, s_false = small(loop=lp), small(loop=dict(lp, shortcut=False))
    s_long, s_short = small(loop={"kind": "loopformer", "iterations": 4}), small(loop={"kind": "loopformer",
                                                                                      "iterations": 2,
                                                                                      "trajectory": [0.75, 0.25]})
    w = weights(s_sc, 70)
    tok, tgt = data(s_sc, 70, B=2)
    D = s_sc["d_model"]
    head = w["lm_head.weight"].astype(np.float64)

    def hand(rows, tgts):                  # two forwards per row from specs holding the trajectories
        lg_l, lg_s, x_l, x_s = [], [], [], []
        for row in rows:
            tl, ts = {}, {}
            lg_l.append(ref.forward(s_long, w, row, trace=tl))
            lg_s.append(ref.forward(s_short, w, row, trace=ts))
            assert np.array_equal(tl["final_hidden"] @ head.T, lg_l[-1])       # the head's input
            x_l.append(tl["final_hidden"])
            x_s.append(ts["final_hidden"])
        ce_l = float(np.mean(train.cross_entropy(np.stack(lg_l), tgts)))
        ce_s = float(np.mean(train.cross_entropy(np.stack(lg_s), tgts)))
        diff = np.stack(x_l) - np.stack(x_s)
        mse = float(np.sum(diff * diff) / diff.size)                   # mean over B * T * D elements
        assert diff.size == len(rows) * T * D
        return ce_l, ce_s, mse, x_l, x_s

    ce_l, ce_s, mse, x_l, x_s = hand(tok, tgt)
    want = ce_l + 0.1 * ce_s + 0.1 * mse
    got = train.loss(s_sc, w, tok, tgt, shortcut=[0.75, 0.25])
    assert abs(got - want) <= 1e-12 * abs(want), (got, want)
    assert mse > 1e-3 and ce_l != ce_s, (mse, ce_l, ce_s)
    terms = train.shortcut_terms(s_sc, w, tok, tgt, [0.75, 0.25])
    assert all(abs(a - b) <= 1e-12 * max(abs(b), 1e-12) for a, b in zip(terms, (ce_l, ce_s, mse))), terms
    c1 = hand(tok[1:], tgt[1:])
    got1 = train.loss(s_sc, w, tok[1], tgt[1], shortcut=(0.75, 0.25))              # a [T] sequence
    assert abs(got1 - (c1[0] + 0.1 * c1[1] + 0.1 * c1[2])) <= 1e-12 * abs(got1)
    # the long pass is [1/M] * M: the spec's own trajectory in its place gives another value
    lg_sp = np.stack([ref.forward(s_plain, w, r) for r in tok])
    ce_sp = float(np.mean(train.cross_entropy(lg_sp, tgt)))
    assert abs(ce_sp - ce_l) > 1e-4, "the spec's trajectory and the uniform one agree: test is blind"
    # frozen_long_final: the unperturbed long states give the same value; another target changes only the MSE term
    frozen = train.shortcut_long_final(s_sc, w, tok)
    assert len(frozen) == 2 and all(np.array_equal(f, x) for f, x in zip(frozen, x_l))
    assert train.loss(s_sc, w, tok, tgt, shortcut=[0.75, 0.25], frozen_long_final=frozen) == got
    zeros = [np.zeros((T, D)) for _ in range(2)]
    gz = train.loss(s_sc, w, tok, tgt, shortcut=[0.75, 0.25], frozen_long_final=zeros)
    wz = ce_l + 0.1 * ce_s + 0.1 * float(np.mean(np.stack(x_s) ** 2))
    assert abs(gz - wz) <= 1e-12 * abs(wz), (gz, wz)
    # a short list equal to the long one: MSE 0, loss = 1.1 CE(long)
    g_same = train.loss(s_sc, w, tok, tgt, shortcut=[0.25] * 4)
    assert abs(g_same - 1.1 * ce_l) <= 1e-12 * g_same, (g_same, 1.1 * ce_l)
    # fractions-like lists and other lengths work (2/4, 1/4, 1/4)
    c3 = train.shortcut_terms(s_sc, w, tok, tgt, [2 / 4, 1 / 4, 1 / 4])
    assert c3[0] == terms[0] and c3[1] != terms[1] and c3[2] != terms[2]
    # without the key (or shortcut: false) the loss is the mean CE of the spec's forward, and shortcut is refused
    for sp in (s_plain, s_false):
        assert train.loss(sp, w, tok, tgt) == ce_sp
        for kw in (dict(shortcut=[0.75, 0.25]), dict(frozen_long_final=frozen)):
            try:
                train.loss(sp, w, tok, tgt, **kw)
                raise AssertionError(f"no ValueError for {list(kw)} without loop.shortcut")
            except ValueError as e:
                assert "shortcut" in str(e), str(e)
    s_std = small()
    ws = weights(s_std, 71)
    for bad_call, frag in ((lambda: train.loss(s_std, ws, tok, tgt, shortcut=[1.0]), "loop.shortcut"),
                           (lambda: train.loss(s_sc, w, tok, tgt), "shortcut"),
                           (lambda: train.loss(s_sc, w, tok, tgt, shortcut=[0.75, 0.5]), "sum to 1"),
                           (lambda: train.loss(s_sc, w, tok, tgt, shortcut=[1.25, -0.25]), "> 0"),
                           (lambda: train.loss(s_sc, w, tok, tgt, shortcut=[0.75, 0.25],
                                               frozen_long_final=frozen[:1]), "frozen_long_final"),
                           (lambda: train.loss(s_sc, w, tok, tgt, shortcut=[0.75, 0.25],
                                               frozen_long_final=[f[:-1] for f in frozen]), "frozen_long_final"),
                           (lambda: train.shortcut_long_final(s_plain, w, tok), "loop.shortcut")):
        try:
            bad_call()
            raise AssertionError(f"no ValueError (wanted {frag!r})")
        except ValueError as e:
            assert frag in str(e), str(e)
    return f"CE(long) {ce_l:.4f} CE(short) {ce_s:.4f} MSE {mse:.4f} -> {want:.4f}; spec-trajectory CE {ce_sp:.4f}"


# ---------------------------------------------------------------- LoopUS deep supervision (ARCHITECTURES.md s4.3)

def _loopus_loop(**kw):
    lp = {"kind": "loopus", "prelude": 1, "core": 2, "coda": 1, "iterations": 3, "rank": 3,
          "supervision": {"steps": 4, "supervised": 2, "beta": 0.7}}
    lp.update(kw)
    return lp


# (label, spec overrides): split, norm, MLP, attention and position options, tied / untied heads.
LOOPUS_CONFIGS = [
    ("P=1 C=2 K=1 rmsnorm+swiglu+softmax+rope+GQA+untied", dict(layers=4, loop=_loopus_loop())),
    ("P=1 C=1 K=0 layernorm+gelu+biases+learned+tied", dict(
        layers=2, kv_heads=4, norm={"kind": "layernorm"}, mlp={"kind": "gelu", "width": 24}, bias=True,
        position="learned", tie_embeddings=True, loop=_loopus_loop(prelude=1, core=1, coda=0))),
    ("P=0 C=2 K=1 rmsnorm+relu2+softpick+rope+untied, default supervision", dict(
        layers=3, mlp={"kind": "relu2", "width": 24}, attention={"normalizer": "softpick"},
        loop={"kind": "loopus", "prelude": 0, "core": 2, "coda": 1, "iterations": 3})),
]


def _loopus_spec(i):
    return small(**LOOPUS_CONFIGS[i][1])


def _halt_none(spec):
    s = dict(spec, loop=dict(spec["loop"], halt={"mode": "none", "threshold": 0.9, "tolerance": 0.01}))
    return ref.make_spec(**{k: v for k, v in s.items()})


def _fd_supervised(spec, W, h, tgt, G, parts, beta=None, per_tensor=8, eps=1e-5, seed=0):
    """Central differences of supervised_loss (h, CE_old, acc held) against G; returns (worst, n)."""
    rng = np.random.default_rng(seed)
    W = {n: a.copy() for n, a in W.items()}
    worst, n_entries = 0.0, 0
    for n, g in G.items():
        flat = rng.choice(g.size, size=min(per_tensor, g.size), replace=False).tolist()
        flat.append(int(np.argmax(np.abs(g))))
        scale = max(float(np.max(np.abs(g))), 1e-6)
        for i in flat:
            idx = np.unravel_index(i, g.shape)
            old = W[n][idx]
            W[n][idx] = old + eps
            lp = train.supervised_loss(spec, W, h, tgt, beta, parts["ce_old"], parts["acc"])[0]
            W[n][idx] = old - eps
            lm = train.supervised_loss(spec, W, h, tgt, beta, parts["ce_old"], parts["acc"])[0]
            W[n][idx] = old
            fd = (lp - lm) / (2 * eps)
            err = abs(fd - g[idx]) / scale
            n_entries += 1
            # 1e-9 absolute: the differences' rounding (L ~ 10, eps 1e-5), for exactly-zero gradients
            # (the encoder's, with h constant; wk.bias under softmax without RoPE)
            assert abs(fd - g[idx]) < 1e-6 * scale + 1e-9, \
                f"{n}{list(idx)}: analytic {g[idx]:.10e} fd {fd:.10e} (err/max|g| {err:.2e})"
            if scale > 1e-6:
                worst = max(worst, err)
    return worst, n_entries


@check("loopus: E + N advances + Dec (float64 tape) equals decoder.forward with halt none; sigmoid(z) is its q_k; "
       "CE(Dec(advance^s(E))) is its CE at iterations s")
def _():
    worst = 0.0
    for i in range(len(LOOPUS_CONFIGS)):
        s = _halt_none(_loopus_spec(i))
        w = weights(s, 40 + i)
        tok, tgt = data(s, 40 + i)
        tr = {}
        lg = ref.forward(s, w, tok, trace=tr)
        N = s["loop"]["iterations"]
        h = train.loopus_encode(s, w, tok)
        assert np.max(np.abs(h - tr["h"][0])) <= 1e-13 * np.max(np.abs(h))
        for k in range(N):
            L, parts = train.supervised_loss(s, w, h, tgt)
            assert abs(float(ref.sigmoid(parts["z"])) - tr["q"][k]) < 1e-13, (i, k)
            h_next = train.loopus_advance(s, w, h)
            assert np.array_equal(h_next, parts["h_new"])
            # CE_new at step k is the CE of the inference forward with k + 1 passes
            sk = ref.make_spec(**dict(s, loop=dict(s["loop"], iterations=k + 1)))
            lg_k = ref.forward(sk, w, tok)
            assert abs(parts["ce_new"] - float(np.mean(train.cross_entropy(lg_k, tgt)))) < 1e-12
            if k:
                sk0 = ref.make_spec(**dict(s, loop=dict(s["loop"], iterations=k)))
                ce0 = float(np.mean(train.cross_entropy(ref.forward(sk0, w, tok), tgt)))
                assert abs(parts["ce_old"] - ce0) < 1e-12
                assert abs(parts["acc"] - float(np.mean(np.argmax(lg_k, -1) == tgt))) == 0
            h = h_next
            worst = max(worst, float(np.max(np.abs(h - tr["h"][k + 1])) / np.max(np.abs(h))))
        lg2 = train._loopus_decode(s, {n: a.astype(np.float64) for n, a in w.items()}, h)[0]
        worst = max(worst, float(np.max(np.abs(lg2 - lg)) / np.max(np.abs(lg))))
    assert worst < 1e-13, worst
    return f"{len(LOOPUS_CONFIGS)} configs, worst rel {worst:.1e}"


@check("loopus (a): supervised_loss_and_grads vs central finite differences (float64; h, CE_old, acc held) at "
       "s = 0 and s = 2, every config; encoder layers / untied embedding / positions exactly 0")
def _():
    notes = []
    for i, (label, _) in enumerate(LOOPUS_CONFIGS):
        s = _loopus_spec(i)
        W = {n: a.astype(np.float64) for n, a in weights(s, 50 + i).items()}
        tok, tgt = data(s, 50 + i)
        P = s["loop"]["prelude"]
        for sup in (0, 2):
            h = train.loopus_states(s, W, tok, sup)[0]
            L, parts, G = train.supervised_loss_and_grads(s, W, h, tgt)
            assert set(G) == set(ref.weight_shapes(s))
            L2, parts2 = train.supervised_loss(s, W, h, tgt)
            assert L2 == L and parts2["ce_old"] == parts["ce_old"] and parts2["z"] == parts["z"]
            zero = [n for n in G if any(n.startswith(f"layers.{l}.") for l in range(P))] + ["pos_embed.weight"] * (
                "pos_embed.weight" in G) + ["embed.weight"] * (not s["tie_embeddings"])
            for n in zero:
                assert not np.any(G[n]), f"{n} has a nonzero gradient"
            for n in G:
                if n not in zero and not n.endswith("attn.wk.bias"):   # softmax shift invariance: exactly 0
                    assert np.any(G[n]), f"{n}: gradient identically zero"
            worst, ne = _fd_supervised(s, W, h, tgt, G, parts, seed=i)
            notes.append(f"{i}/s={sup}: {ne} entries worst {worst:.1e} (L {L:.3f} acc {parts['acc']:.2f} "
                         f"z {parts['z']:+.2f})")
        # random weights give acc = 0: also a given acc, beta and CE_old (both signs of CE_new - CE_old)
        h = train.loopus_states(s, W, tok, 1)[0]
        for acc, beta, shift in ((0.5, 2.0, 0.3), (5 / 6, 0.5, -0.4)):
            ce_new = train.supervised_loss(s, W, h, tgt)[1]["ce_new"]
            L, parts, G = train.supervised_loss_and_grads(s, W, h, tgt, beta, ce_new + shift, acc)
            assert parts["acc"] == acc and parts["ce_old"] == ce_new + shift
            worst, ne = _fd_supervised(s, W, h, tgt, G, parts, beta=beta, per_tensor=3, seed=10 + i)
        notes.append(f"{i}/given acc, beta, CE_old: worst {worst:.1e}")
    return "; ".join(notes)


@check("loopus: loopus_grad on a [B, T] batch is the mean of per-row supervised_loss_and_grads at advance^s(E(row))")
def _():
    s = _loopus_spec(0)
    W = {n: a.astype(np.float64) for n, a in weights(s, 60).items()}
    tok, tgt = data(s, 60, B=3)
    L, G, parts = train.loopus_grad(s, W, tok, tgt, 1)
    rows = []
    for b in range(3):
        h = train.loopus_advance(s, W, train.loopus_encode(s, W, tok[b]))
        rows.append(train.supervised_loss_and_grads(s, W, h, tgt[b]))
    assert abs(L - np.mean([r[0] for r in rows])) < 1e-14
    for n in G:
        want = np.mean([r[2][n] for r in rows], axis=0)
        assert np.max(np.abs(G[n] - want)) <= 1e-14 * max(np.max(np.abs(want)), 1.0), n
    assert [p["z"] for p in parts] == [r[1]["z"] for r in rows]
    return f"L {L:.4f}"


@check("loopus (b): L = CE_new + beta SiLU(CE_new - CE_old) + BCE_logits(z, acc): with beta = 0 and acc fixed, "
       "L = CE_new + BCE; beta from the spec; the BCE formula against log-sigmoid")
def _():
    s = _loopus_spec(0)
    w = weights(s, 70)
    tok, tgt = data(s, 70)
    h = train.loopus_states(s, w, tok, 1)[0]
    L0, p0 = train.supervised_loss(s, w, h, tgt, beta=0.0, acc=0.25)
    z = p0["z"]
    q = 1.0 / (1.0 + math.exp(-z))
    bce = -(0.25 * math.log(q) + 0.75 * math.log(1.0 - q))
    assert abs(train.bce_logits(z, 0.25) - bce) < 1e-12
    assert p0["acc"] == 0.25 and abs(L0 - (p0["ce_new"] + bce)) < 1e-12, (L0, p0)
    for a in (0.0, 1.0, 0.6):
        La, pa = train.supervised_loss(s, w, h, tgt, beta=0.0, acc=a)
        assert abs(La - (pa["ce_new"] + train.bce_logits(pa["z"], a))) < 1e-12
    L, p = train.supervised_loss(s, w, h, tgt)                      # beta 0.7 from the spec
    d = p["ce_new"] - p["ce_old"]
    want = p["ce_new"] + 0.7 * d / (1.0 + math.exp(-d)) + train.bce_logits(p["z"], p["acc"])
    assert abs(L - want) < 1e-12 and train.loopus_supervision(s)["beta"] == 0.7
    # an acc computed from the logits: a fraction k / T
    assert abs(p["acc"] * T - round(p["acc"] * T)) < 1e-12
    # extreme logits stay finite
    assert abs(train.bce_logits(800.0, 1.0)) < 1e-300 and abs(train.bce_logits(-800.0, 0.0)) < 1e-300
    assert abs(train.bce_logits(800.0, 0.0) - 800.0) < 1e-9
    return f"CE_new {p['ce_new']:.4f} CE_old {p['ce_old']:.4f} acc {p['acc']:.3f} z {p['z']:+.3f} -> L {L:.4f}"


@check("loopus: loop.supervision defaults (steps = iterations, supervised = min(5, steps), beta = 1) and validation; "
       "check_supervise; loss_and_grads refuses loopus")
def _():
    s = _loopus_spec(2)                                     # no supervision key, iterations 3
    assert "supervision" not in s["loop"]
    assert train.loopus_supervision(s) == {"steps": 3, "supervised": 3, "beta": 1.0}
    s8 = small(layers=4, loop=_loopus_loop(iterations=8, supervision=None))
    assert train.loopus_supervision(s8) == {"steps": 8, "supervised": 5, "beta": 1.0}
    s20 = small(layers=4, loop=_loopus_loop(supervision={"steps": 20}))
    assert train.loopus_supervision(s20) == {"steps": 20, "supervised": 5, "beta": 1.0}
    s2 = small(layers=4, loop=_loopus_loop(supervision={"beta": 0}))
    assert train.loopus_supervision(s2) == {"steps": 3, "supervised": 3, "beta": 0.0}
    bad = [({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"supervised": 0}, "supervised"),
           ({"steps": 3, "supervised": 4}, "supervised"), ({"beta": "x"}, "beta"), ({"beta": float("nan")}, "beta"),
           ({"sigma": 1}, "unknown"), ([1, 2], "mapping")]
    for sup, frag in bad:
        try:
            small(layers=4, loop=_loopus_loop(supervision=sup))
            raise AssertionError(f"no ValueError for supervision {sup}")
        except ValueError as e:
            assert frag in str(e), str(e)
    try:
        small(layers=4, loop={"kind": "parcae", "prelude": 1, "core": 2, "coda": 1, "iterations": 3,
                              "supervision": {}})
        raise AssertionError("parcae accepted loop.supervision")
    except ValueError as e:
        assert "only allowed with kind: loopus" in str(e), str(e)
    s0 = _loopus_spec(0)                                    # steps 4
    assert train.check_supervise(s0, [0, 2, 3]) == [0, 2, 3] and train.check_supervise(s0, 1) == [1]
    for S, frag in (([], "at least one"), ([4], "[0, steps = 4)"), ([-1], "[0, steps"), ([2, 1], "sorted"),
                    ([1, 1], "distinct"), ([0.0], "integer")):
        try:
            train.check_supervise(s0, S)
            raise AssertionError(f"check_supervise accepted {S}")
        except ValueError as e:
            assert frag in str(e), (S, str(e))
    try:
        train.loss_and_grads(s0, weights(s0, 0), [1, 2], [2, 3])
        raise AssertionError("loss_and_grads accepted loopus")
    except NotImplementedError as e:
        assert "random deep supervision" in str(e)
    return "ok"


def _adam_from(spec, W, G, m, v, t, lr):
    Gc, _ = train.clip_by_global_norm(G, 1.0)
    return train.adamw_step(W, Gc, m, v, t, lr, no_decay=train.no_decay_names(spec, list(W)))


@check("loopus (c): train step with S = [0] is one AdamW step (clipped, step t) from supervised_loss's gradient at "
       "h = E(tokens) ([T] and [B, T]; t = 1 and t = 3 with given moments)")
def _():
    notes = []
    for i in range(len(LOOPUS_CONFIGS)):
        s = _loopus_spec(i)
        W = {n: a.astype(np.float64) for n, a in weights(s, 80 + i).items()}
        for B in (None, 2):
            tok, tgt = data(s, 80 + i, B=B)
            L, G, _ = train.loopus_grad(s, W, tok, tgt, 0)
            w1, m1, v1, info = train.loopus_train_step(s, W, None, None, tok, tgt, [0], 0.01, 1)
            want_w, want_m, want_v = _adam_from(s, W, G, None, None, 1, 0.01)
            assert info["adam_steps"] == [1] and abs(info["loss"] - L) < 1e-14
            for n in W:
                assert np.max(np.abs(w1[n] - want_w[n])) < 1e-15, n
                assert np.array_equal(m1[n], want_m[n]) and np.array_equal(v1[n], want_v[n]), n
            # train step 3 with moments: AdamW step 3 (len(S) = 1)
            w3, m3, v3, info3 = train.loopus_train_step(s, w1, m1, v1, tok, tgt, [0], 0.01, 3)
            _, G1, _ = train.loopus_grad(s, w1, tok, tgt, 0)
            want_w, want_m, want_v = _adam_from(s, w1, G1, m1, v1, 3, 0.01)
            assert info3["adam_steps"] == [3]
            for n in W:
                assert np.max(np.abs(w3[n] - want_w[n])) < 1e-15 and np.array_equal(m3[n], want_m[n]), n
        notes.append(f"{i}: norm {info['grad_norms'][0]:.3f}")
    return "; ".join(notes)


@check("loopus (d): train step with S = [1] uses h = advance(E(tokens)); S = [0, 2] advances h_new (old weights) "
       "then once more with the updated weights, AdamW steps (t-1)*2 + 1, + 2; the loss is the mean over j and b")
def _():
    s = _loopus_spec(0)
    W = {n: a.astype(np.float64) for n, a in weights(s, 90).items()}
    tok, tgt = data(s, 90, B=2)
    lr = 0.01
    w1, _, _, info = train.loopus_train_step(s, W, None, None, tok, tgt, [1], lr, 1)
    G = {n: 0.0 for n in W}
    for b in range(2):
        h = train.loopus_advance(s, W, train.loopus_encode(s, W, tok[b]))
        _, _, Gb = train.supervised_loss_and_grads(s, W, h, tgt[b])
        G = {n: G[n] + Gb[n] / 2 for n in W}
    want_w, _, _ = _adam_from(s, W, G, None, None, 1, lr)
    assert all(np.max(np.abs(w1[n] - want_w[n])) < 1e-15 for n in W)
    w0, _, _, _ = train.loopus_train_step(s, W, None, None, tok, tgt, [0], lr, 1)
    moved = max(float(np.max(np.abs(w1[n] - w0[n]))) for n in W)
    assert moved > 1e-3 * lr, "S = [1] and S = [0] gave the same step"
    # S = [0, 2] at train step t = 2 (so AdamW steps 3 and 4), from given moments
    m0 = {n: 0.01 * np.ones_like(a) for n, a in W.items()}
    v0 = {n: 1e-4 * np.ones_like(a) for n, a in W.items()}
    w2, m2, v2, info = train.loopus_train_step(s, W, m0, v0, tok, tgt, [0, 2], lr, 2)
    assert info["adam_steps"] == [3, 4]
    hs = [train.loopus_encode(s, W, tok[b]) for b in range(2)]
    res = [train.supervised_loss_and_grads(s, W, hs[b], tgt[b]) for b in range(2)]
    G = {n: (res[0][2][n] + res[1][2][n]) / 2 for n in W}
    Wa, ma, va = _adam_from(s, W, G, m0, v0, 3, lr)
    hs = [train.loopus_advance(s, W, h) for h in hs]          # step 0's h_new: the weights before the update
    assert all(np.array_equal(hs[b], res[b][1]["h_new"]) for b in range(2))
    hs = [train.loopus_advance(s, Wa, h) for h in hs]         # step 1 (unsupervised): the updated weights
    res2 = [train.supervised_loss_and_grads(s, Wa, hs[b], tgt[b]) for b in range(2)]
    G = {n: (res2[0][2][n] + res2[1][2][n]) / 2 for n in W}
    Wb, mb, vb = _adam_from(s, Wa, G, ma, va, 4, lr)
    for n in W:
        assert np.max(np.abs(w2[n] - Wb[n])) < 1e-15 and np.max(np.abs(m2[n] - mb[n])) < 1e-17, n
        assert np.max(np.abs(v2[n] - vb[n])) < 1e-19, n
    want_loss = np.mean([r[0] for r in res + res2])
    assert abs(info["loss"] - want_loss) < 1e-14
    assert info["losses"] == [[r[0] for r in res], [r[0] for r in res2]]
    return f"loss {info['loss']:.4f}, norms {info['grad_norms'][0]:.3f} {info['grad_norms'][1]:.3f}"


LOOPUS_YAML = ("name: lu\nvocab: 32\nd_model: 16\nlayers: 4\nheads: 4\nkv_heads: 2\nmax_seq: 16\n"
               "mlp: {kind: swiglu, width: 24}\n"
               "loop: {kind: loopus, prelude: 1, core: 2, coda: 1, iterations: 3, rank: 3,\n"
               "       supervision: {steps: 4, supervised: 2, beta: 0.7}}\n")


def _emulated_loopus_run(spec, w0, tok, tgt, S, lr, nsteps, d, tag, bug=None, noise=1e-6):
    """Checkpoints as lathe-run train-step --supervise S would write them (float32), written out
    independently of loopus_train_step (with float32-sized noise on the gradients), or with a bug."""
    rng = np.random.default_rng(3)
    W = {n: a.astype(np.float64) for n, a in w0.items()}
    m = v = None
    nd = train.no_decay_names(spec, list(W))
    paths = []
    for t in range(1, nsteps + 1):
        hs = [train.loopus_encode(spec, W, row) for row in tok]
        k = 0
        for j, s in enumerate(S):
            for _ in range(s - k):
                hs = [train.loopus_advance(spec, W, h) for h in hs]
            res = [train.supervised_loss_and_grads(spec, W, h, tg) for h, tg in zip(hs, tgt)]
            G = {n: np.mean([r[2][n] for r in res], axis=0) for n in W}
            G, _ = train.clip_by_global_norm(G, 1.0)
            G = {n: g + noise * np.max(np.abs(g)) * rng.normal(size=g.shape) * (np.abs(g) > 0)
                 for n, g in G.items()}
            t_adam = t if bug == "adamstep" else (t - 1) * len(S) + j + 1
            W_old = W
            W, m, v = train.adamw_step(W, G, m, v, t_adam, lr, no_decay=nd if bug != "nodecay" else list(W))
            # h_b = advance(h_b) with the weights before the update (bug: after it)
            hs = [train.loopus_advance(spec, W if bug == "late" else W_old, h) for h in hs]
            k = s + 1
        ck = {n: a.astype(np.float32) for n, a in W.items()}
        ck.update({"adam.m." + n: a.astype(np.float32) for n, a in m.items()})
        ck.update({"adam.v." + n: a.astype(np.float32) for n, a in v.items()})
        ck["optimizer.step"] = np.array([t], np.int64)
        path = os.path.join(d, f"{tag}{t}.safetensors")
        safetensors_np.save(path, ck)
        paths.append(path)
        W = {n: ck[n].astype(np.float64) for n in W}
        m = {n: ck["adam.m." + n].astype(np.float64) for n in m}
        v = {n: ck["adam.v." + n].astype(np.float64) for n in v}
    return paths


@check("check_train_step.py --supervise: passes emulated float32 LoopUS checkpoints (S = 0,2,3, two train steps, "
       "B = 2); fails on per-train-step AdamW numbering / advancing with the updated weights / no decay / another S; "
       "a loopus spec needs --supervise")
def _():
    import yaml
    s = ref.make_spec(**yaml.safe_load(LOOPUS_YAML))
    w0 = weights(s, 95)
    tok, tgt = data(s, 95, B=2)
    tok_s = ";".join(",".join(map(str, r)) for r in tok)
    tgt_s = ";".join(",".join(map(str, r)) for r in tgt)
    script = os.path.join(HERE, "..", "e2e", "inputs", "check_train_step.py")
    lr = 0.01
    with tempfile.TemporaryDirectory() as d:
        Sy, W0 = os.path.join(d, "s.yaml"), os.path.join(d, "w0.safetensors")
        open(Sy, "w").write(LOOPUS_YAML)
        safetensors_np.save(W0, w0)

        def run(paths, *flags):
            return subprocess.run([sys.executable, script, Sy, W0, tok_s, tgt_s, str(lr), *paths, *flags],
                                  capture_output=True, text=True)
        ok = _emulated_loopus_run(s, w0, tok, tgt, [0, 2, 3], lr, 2, d, "ok")
        r = run(ok, "--supervise", "0,2,3")
        assert r.returncode == 0 and "OK 2 steps, " in r.stdout and "3 AdamW updates per step" in r.stdout, \
            r.stdout + r.stderr
        first = r.stdout.splitlines()[0]
        fails = []
        for bug, where in (("adamstep", "MISMATCH step 1 "), ("late", "MISMATCH step 1 "),
                           ("nodecay", "MISMATCH step 1 ")):
            rb = run(_emulated_loopus_run(s, w0, tok, tgt, [0, 2, 3], lr, 1, d, bug, bug=bug), "--supervise", "0,2,3")
            assert rb.returncode == 1 and where in rb.stdout, (bug, rb.stdout + rb.stderr)
            fails.append(f"{bug}: {rb.stdout.strip().splitlines()[-1]}")
        # optimizer.step may count train steps (1) or AdamW updates (3), nothing else
        ck, _ = safetensors_np.load(ok[0])
        for count, rc in ((3, 0), (2, 1)):
            alt = os.path.join(d, f"count{count}.safetensors")
            safetensors_np.save(alt, dict(ck, **{"optimizer.step": np.array([count], np.int64)}))
            rb = run([alt], "--supervise", "0,2,3")
            assert rb.returncode == rc, (count, rb.stdout + rb.stderr)
        assert "MISMATCH step 1: checkpoint says 2" in rb.stdout, rb.stdout
        rb = run(ok[:1], "--supervise", "0,1,3")
        assert rb.returncode == 1 and "MISMATCH step 1 " in rb.stdout, rb.stdout
        rb = run(ok[:1])
        assert rb.returncode == 2 and "--supervise" in rb.stderr, rb.stderr
        rb = run(ok[:1], "--supervise", "3,1")
        assert rb.returncode == 2 and "sorted" in rb.stderr, rb.stderr
        rb = run(ok[:1], "--supervise", "0,4")
        assert rb.returncode == 2 and "[0, steps = 4)" in rb.stderr, rb.stderr
        rb = run(ok[:1], "--supervise", "0", "--optimizer", "muon")
        assert rb.returncode == 2, rb.stderr
    return first + "; " + "; ".join(fails)


@check("check_grad_fd.py --supervise S: passes the reference's own float32 gradient of lathe-run grad --supervise S "
       "(S = 0 and 2); fails on another S's gradient / a wrong loss; train.py --supervise --out/--compare")
def _():
    import yaml
    s = ref.make_spec(**yaml.safe_load(LOOPUS_YAML))
    w = ref.init_weights(s, 97, scale=6.0, norm_jitter=0.3)
    tok, tgt = data(s, 97)
    script = os.path.join(HERE, "..", "e2e", "inputs", "check_grad_fd.py")
    tk, tg = ",".join(map(str, tok)), ",".join(map(str, tgt))
    notes = []
    with tempfile.TemporaryDirectory() as d:
        Sy, W = os.path.join(d, "s.yaml"), os.path.join(d, "w.safetensors")
        open(Sy, "w").write(LOOPUS_YAML)
        safetensors_np.save(W, w)
        grads = {}
        for sup in (0, 2):
            L, G, _ = train.loopus_grad(s, w, tok, tgt, sup)
            path = os.path.join(d, f"g{sup}.safetensors")
            safetensors_np.save(path, dict({n: a.astype(np.float32) for n, a in G.items()},
                                           loss=np.array([L], np.float32)))
            grads[sup] = (path, L, G)
            r = subprocess.run([sys.executable, script, Sy, W, tk, tg, path, "--supervise", str(sup)],
                               capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(f"OK {len(G)} tensors"), \
                r.stdout + r.stderr
            assert r.stdout.startswith(f"supervise {sup}: h = advance^{sup}(E(tokens)) held constant; "
                                       f"L = CE_new + 0.7 SiLU(CE_new - CE_old) + BCE(z, acc)"), r.stdout
            notes.append(r.stdout.splitlines()[-1])
        # S = 0 is the default
        r = subprocess.run([sys.executable, script, Sy, W, tk, tg, grads[0][0]], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("supervise 0:"), r.stdout + r.stderr
        # the gradient of step 2 with the loss of step 0: a gradient mismatch
        path, L0, _ = grads[0]
        _, _, G2 = grads[2]
        bad = os.path.join(d, "bad.safetensors")
        safetensors_np.save(bad, dict({n: a.astype(np.float32) for n, a in G2.items()},
                                      loss=np.array([L0], np.float32)))
        r = subprocess.run([sys.executable, script, Sy, W, tk, tg, bad, "--supervise", "0"],
                           capture_output=True, text=True)
        assert r.returncode == 1 and "MISMATCH layers." in r.stdout, r.stdout + r.stderr
        r = subprocess.run([sys.executable, script, Sy, W, tk, tg, grads[2][0], "--supervise", "1"],
                           capture_output=True, text=True)
        assert r.returncode == 1 and "MISMATCH loss" in r.stdout, r.stdout
        r = subprocess.run([sys.executable, script, Sy, W, tk, tg, grads[2][0], "--supervise", "4"],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "--supervise" in r.stderr, r.stderr
        # train.py's CLI
        cli = [sys.executable, os.path.join(HERE, "train.py"), "--spec", Sy, "--weights", W, "--tokens", tk,
               "--targets", tg]
        out = os.path.join(d, "ref.safetensors")
        r = subprocess.run(cli + ["--supervise", "2", "--out", out], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        g, _ = safetensors_np.load(out)
        assert abs(float(g["loss"][0]) - grads[2][1]) < 1e-6 * grads[2][1]
        r = subprocess.run(cli + ["--supervise", "2", "--compare", grads[2][0]], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run(cli + ["--compare", grads[2][0]], capture_output=True, text=True)    # default s = 0
        assert r.returncode == 1 and "MISMATCH" in r.stdout, r.stdout
    return "; ".join(notes)


if __name__ == "__main__":
    t0 = time.time()
    passed = failed = skipped = 0
    for name, fn in CHECKS:
        t = time.time()
        try:
            note = fn() or ""
            status = "SKIP" if note.startswith("SKIPPED") else "PASS"
        except Exception as e:  # noqa: BLE001
            status, note = "FAIL", f"{type(e).__name__}: {e}"
            traceback.print_exc()
        passed += status == "PASS"
        failed += status == "FAIL"
        skipped += status == "SKIP"
        print(f"{status}  {name}  [{note}] ({time.time() - t:.1f}s)", flush=True)
    print(f"train selfcheck: {passed} checks passed" + (f", {failed} FAILED" if failed else "")
          + (f", {skipped} skipped" if skipped else "") + f" ({time.time() - t0:.1f}s)")
    sys.exit(1 if failed else 0)
