#!/usr/bin/python3
"""Self-checks for the numpy reference decoder (no pytest needed).

Each check is an invariant that fails if the reference is wrong, or a
comparison against a second implementation written differently (explicit
loops, complex-number RoPE, and PyTorch when it is installed).
Run: /usr/bin/python3 test/reference/test_decoder_selfcheck.py
"""
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import decoder as ref  # noqa: E402
import safetensors_np  # noqa: E402

EXAMPLES = os.path.join(HERE, "..", "..", "examples")
RESULTS = []


def check(name):
    def wrap(fn):
        try:
            note = fn()
            RESULTS.append((name, True, note or ""))
        except Exception as e:  # report every failure, keep going
            RESULTS.append((name, False, f"{type(e).__name__}: {e}"))
        return fn
    return wrap


def close(a, b, tol=1e-10, what=""):
    err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    assert err <= tol, f"{what} max abs err {err:.3e} > {tol:.1e}"
    return err


def small_spec(**kw):
    base = dict(name="t", vocab=37, d_model=32, layers=2, heads=4, kv_heads=2, max_seq=16,
                mlp={"kind": "swiglu", "width": 48}, norm={"eps": 1e-5}, rope={"base": 100.0})
    base.update(kw)
    return ref.make_spec(**base)


# Larger-than-documented init so attention is far from uniform and RoPE and
# head-mapping errors move the logits a lot; jittered norm gains catch ignored gains.
def weights(spec, seed=0):
    return ref.init_weights(spec, seed, scale=10.0, norm_jitter=0.3)


TOKENS = [3, 17, 0, 36, 5, 5, 21, 9, 30, 1]


# ---------------------------------------------------------------- independent loop implementation

def rope_complex(vec, p, base):
    """RoPE of one head vector via complex numbers: z_i = x_i + i x_{i+Dh/2}, z_i *= e^{i p f_i}."""
    half = len(vec) // 2
    out = np.empty(len(vec))
    for i in range(half):
        z = complex(vec[i], vec[i + half]) * complex(math.cos(p * base ** (-2 * i / len(vec))),
                                                     math.sin(p * base ** (-2 * i / len(vec))))
        out[i], out[i + half] = z.real, z.imag
    return out


def forward_loops(spec, w, tokens):
    """Plain per-token, per-head loops. Only for kv_heads == heads (plain MHA)."""
    assert spec["kv_heads"] == spec["heads"]
    W = {n: a.astype(np.float64) for n, a in w.items()}
    D, H, eps, base = spec["d_model"], spec["heads"], spec["norm"]["eps"], spec["rope"]["base"]
    Dh = D // H

    def norm(v, g):
        return [v[i] / math.sqrt(sum(t * t for t in v) / len(v) + eps) * g[i] for i in range(len(v))]

    def lin(Wm, v):  # Wm is [out, in]
        return [float(np.dot(Wm[o], v)) for o in range(Wm.shape[0])]

    xs = [list(W["embed.weight"][t]) for t in tokens]
    for l in range(spec["layers"]):
        p = f"layers.{l}."
        hs = [norm(x, W[p + "attn_norm.weight"]) for x in xs]
        qs = [lin(W[p + "attn.wq.weight"], h) for h in hs]
        ks = [lin(W[p + "attn.wk.weight"], h) for h in hs]
        vs = [lin(W[p + "attn.wv.weight"], h) for h in hs]
        new = []
        for t in range(len(xs)):
            heads_out = []
            for hd in range(H):
                sl = slice(hd * Dh, (hd + 1) * Dh)
                q = rope_complex(np.array(qs[t][sl]), t, base)
                sc = [float(np.dot(q, rope_complex(np.array(ks[s][sl]), s, base))) / math.sqrt(Dh)
                      for s in range(t + 1)]
                m = max(sc)
                e = [math.exp(z - m) for z in sc]
                heads_out += [sum(e[s] / sum(e) * vs[s][sl][d] for s in range(t + 1)) for d in range(Dh)]
            o = lin(W[p + "attn.wo.weight"], heads_out)
            new.append([xs[t][i] + o[i] for i in range(D)])
        xs = new
        for t in range(len(xs)):
            h = norm(xs[t], W[p + "mlp_norm.weight"])
            g, u = lin(W[p + "mlp.w_gate.weight"], h), lin(W[p + "mlp.w_up.weight"], h)
            act = [gi / (1 + math.exp(-gi)) * ui for gi, ui in zip(g, u)]
            d = lin(W[p + "mlp.w_down.weight"], act)
            xs[t] = [xs[t][i] + d[i] for i in range(D)]
    return np.array([lin(W["lm_head.weight"], norm(x, W["norm.weight"])) for x in xs])


# ---------------------------------------------------------------- checks

@check("spec: examples/tiny.yaml loads with all keys")
def _():
    s = ref.load_spec(os.path.join(EXAMPLES, "tiny.yaml"))
    for k in ["name", "vocab", "d_model", "layers", "heads", "kv_heads", "max_seq", "mlp", "norm", "rope"]:
        assert k in s, k
    assert (s["vocab"], s["d_model"], s["heads"], s["kv_heads"]) == (256, 64, 4, 2)
    assert s["mlp"] == {"kind": "swiglu", "width": 128} and s["norm"]["eps"] == 1e-5
    return f"{s['name']}: D={s['d_model']} L={s['layers']} H={s['heads']} K={s['kv_heads']}"


@check("safetensors: round trip F32/I32/F64 + metadata, header layout")
def _():
    t = {"a": np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32),
         "b": np.arange(-6, 6, dtype=np.int32).reshape(2, 2, 3),
         "c": np.array(2.5, dtype=np.float64), "e": np.zeros((0, 4), np.float32)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.safetensors")
        safetensors_np.save(path, t, {"k": "v"})
        back, meta = safetensors_np.load(path)
        raw = open(path, "rb").read()
    assert meta == {"k": "v"} and set(back) == set(t)
    for k in t:
        assert back[k].dtype == t[k].dtype and back[k].shape == t[k].shape and np.array_equal(back[k], t[k]), k
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0 and b'"dtype":"I32"' in raw[8:8 + n]
    # a = 15 floats first in sorted order: its bytes start right after the header
    assert raw[8 + n:8 + n + 60] == t["a"].tobytes()


@check("rmsnorm: unit RMS before gain, gain applied per channel")
def _():
    x = np.random.default_rng(2).normal(3.0, 5.0, size=(7, 24))
    y = ref.rmsnorm(x, np.ones(24), eps=0.0)
    close(np.sqrt(np.mean(y * y, axis=-1)), 1.0, 1e-12, "rms")
    g = np.linspace(0.5, 2.0, 24)
    close(ref.rmsnorm(x, g, 0.0), y * g, 1e-12, "gain")


@check("rope: hand value, norm preserving, q.k depends only on relative position")
def _():
    # Dh = 2: f_0 = 1, so (1, 0) at position 1 must become (cos 1, sin 1).
    close(ref.rope(np.array([[[1.0, 0.0]]] * 2), 10000.0)[1, 0], [math.cos(1), math.sin(1)], 1e-15)
    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(12, 3, 16)), rng.normal(size=(12, 3, 16))
    close(ref.rope(q, 10000.0)[0], q[0], 0, "position 0 must be identity")
    close(np.linalg.norm(ref.rope(q, 10000.0), axis=-1), np.linalg.norm(q, axis=-1), 1e-12, "norm")
    # same vectors at positions shifted by 7: every dot product is unchanged
    pos = np.arange(12)
    dots = lambda off: np.einsum("thd,shd->hts", ref.rope(q, 500.0, pos + off), ref.rope(k, 500.0, pos + off))
    close(dots(0), dots(7), 1e-10, "shift")
    # and it really depends on relative position (guards against a no-op rope)
    assert np.max(np.abs(dots(0) - np.einsum("thd,shd->hts", q, k))) > 1e-2
    # agrees with the complex-number formulation
    for t in (0, 5, 11):
        close(ref.rope(q, 500.0)[t, 2], rope_complex(q[t, 2], t, 500.0), 1e-12, "complex")


@check("attention: softmax rows sum to 1, causal zeros above diagonal")
def _():
    rng = np.random.default_rng(4)
    q, k = rng.normal(size=(9, 4, 8)) * 3, rng.normal(size=(9, 2, 8)) * 3
    P = ref.attention_probs(q, k, 4, 2)
    close(P.sum(-1), 1.0, 1e-12, "row sums")
    assert np.all(P[:, np.triu_indices(9, 1)[0], np.triu_indices(9, 1)[1]] == 0)
    assert np.all(P[:, 0, 0] == 1.0)


@check("forward: MHA (kv_heads == heads) equals independent per-head loop implementation")
def _():
    s = small_spec(kv_heads=4, layers=2)
    w = weights(s, 5)
    a, b = ref.forward(s, w, TOKENS), forward_loops(s, w, TOKENS)
    return f"max abs err {close(a, b, 1e-9 * np.max(np.abs(b)), 'loop'):.2e}, max |logit| {np.max(np.abs(b)):.2f}"


@check("forward: GQA equals MHA with K/V heads repeat_interleaved (h reads kv h // (H/K))")
def _():
    s = small_spec(heads=4, kv_heads=2)
    sm = small_spec(heads=4, kv_heads=4)
    w = weights(s, 6)
    Dh, rep = s["d_model"] // s["heads"], s["heads"] // s["kv_heads"]
    wm = dict(w)
    for l in range(s["layers"]):
        for n in ("wk", "wv"):
            key = f"layers.{l}.attn.{n}.weight"
            # rows [kv*Dh, (kv+1)*Dh) become query heads kv*rep .. kv*rep+rep-1
            wm[key] = np.repeat(w[key].reshape(s["kv_heads"], Dh, -1), rep, axis=0).reshape(-1, s["d_model"])
    close(ref.forward(s, w, TOKENS), forward_loops(sm, wm, TOKENS), 1e-9 * 100, "gqa vs loops")
    # a wrong mapping (h % K, as with repeat instead of repeat_interleave) must differ
    wt = dict(w)
    for l in range(s["layers"]):
        for n in ("wk", "wv"):
            key = f"layers.{l}.attn.{n}.weight"
            wt[key] = np.tile(w[key].reshape(s["kv_heads"], Dh, -1), (rep, 1, 1)).reshape(-1, s["d_model"])
    assert np.max(np.abs(ref.forward(sm, wt, TOKENS) - ref.forward(s, w, TOKENS))) > 1e-3


@check("forward: causal (prefix logits equal first rows; changing a later token changes only later rows)")
def _():
    s = small_spec()
    w = weights(s, 7)
    full = ref.forward(s, w, TOKENS)
    for n in (1, 4, 9):
        close(ref.forward(s, w, TOKENS[:n]), full[:n], 1e-10, f"prefix {n}")
    alt = list(TOKENS)
    alt[6] = (alt[6] + 1) % s["vocab"]
    other = ref.forward(s, w, alt)
    close(other[:6], full[:6], 1e-10, "earlier rows")
    assert np.min(np.max(np.abs(other[6:] - full[6:]), axis=-1)) > 1e-3, "later rows did not move"


@check("weights: missing / misshapen tensors are errors that name them")
def _():
    s = small_spec()
    w = weights(s)
    for bad, frag in ((lambda d: d.pop("layers.1.mlp.w_up.weight"), "layers.1.mlp.w_up.weight"),
                      (lambda d: d.__setitem__("norm.weight", np.ones(5, np.float32)), "norm.weight")):
        d = dict(w)
        bad(d)
        try:
            ref.forward(s, d, TOKENS)
        except ValueError as e:
            assert frag in str(e), str(e)
        else:
            raise AssertionError(f"no error for {frag}")
    ref.forward(s, dict(w, extra=np.zeros(3, np.float32)), TOKENS)  # extra tensors are ignored


@check("softpick: ARCHITECTURES.md s6.9 values, all-negative row is zero, sums <= 1")
def _():
    y = ref.softpick(np.array([2.0, 0.5, -1.0, 0.0, -np.inf]))
    close(y, [0.8330, 0.0846, 0, 0, 0], 5e-5, "values")
    close(y.sum(), 0.918, 5e-4, "sum")
    assert np.all(ref.softpick(np.array([-3.0, -0.1, -np.inf])) == 0)
    z = ref.softpick(np.random.default_rng(8).normal(size=(5, 9)) * 50)  # large logits: no overflow
    assert np.all(np.isfinite(z)) and np.all(z.sum(-1) <= 1 + 1e-12)


@check("CLI: write weights, compare OK / MISMATCH (values and shape)")
def _():
    spec = os.path.join(EXAMPLES, "tiny.yaml")
    cli = [sys.executable, os.path.join(HERE, "decoder.py"), "--spec", spec]
    with tempfile.TemporaryDirectory() as d:
        W, R, B = (os.path.join(d, n) for n in ("w.safetensors", "ref.npy", "bad.npy"))
        subprocess.run(cli + ["--write-weights", W, "--seed", "3"], check=True, capture_output=True)
        run = lambda *a: subprocess.run(cli + ["--weights", W, "--tokens", "72,105,33,10", *a],
                                        capture_output=True, text=True)
        assert run("--out", R).returncode == 0
        good = np.load(R).astype(np.float32)       # as a float32 compiler would return it
        np.save(B, good)
        ok = run("--compare", B)
        assert ok.returncode == 0 and ok.stdout.strip().endswith("OK"), ok.stdout + ok.stderr
        bad = good.copy()
        bad[2, 7] += 1e-3 * np.max(np.abs(good))
        np.save(B, bad)
        r = run("--compare", B)
        assert r.returncode == 1 and r.stdout.startswith("MISMATCH"), r.stdout + r.stderr
        np.save(B, good[:3])
        r = run("--compare", B)
        assert r.returncode == 1 and r.stdout.startswith("MISMATCH shape"), r.stdout + r.stderr
    return ok.stdout.strip()


@check("torch: matches a tiny PyTorch implementation (HF-Llama style)")
def _():
    try:
        import torch
    except ImportError:
        return "SKIPPED: torch is not importable in this interpreter"
    import torch.nn.functional as F
    s = small_spec()
    w = weights(s, 9)
    T, D, H, K = len(TOKENS), s["d_model"], s["heads"], s["kv_heads"]
    Dh, eps = D // H, s["norm"]["eps"]
    tw = {n: torch.tensor(a, dtype=torch.float64) for n, a in w.items()}
    norm = lambda x, g: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g
    inv = 1.0 / (s["rope"]["base"] ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh))
    emb = torch.cat([torch.outer(torch.arange(T, dtype=torch.float64), inv)] * 2, dim=-1)
    cos, sin = emb.cos()[None], emb.sin()[None]                       # [1, T, Dh]
    rot = lambda x: torch.cat([-x[..., Dh // 2:], x[..., :Dh // 2]], -1)
    x = tw["embed.weight"][torch.tensor(TOKENS)]
    for l in range(s["layers"]):
        p = f"layers.{l}."
        h = norm(x, tw[p + "attn_norm.weight"])
        q = F.linear(h, tw[p + "attn.wq.weight"]).view(T, H, Dh).transpose(0, 1)
        k = F.linear(h, tw[p + "attn.wk.weight"]).view(T, K, Dh).transpose(0, 1)
        v = F.linear(h, tw[p + "attn.wv.weight"]).view(T, K, Dh).transpose(0, 1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(H // K, 0), v.repeat_interleave(H // K, 0)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + F.linear(a.transpose(0, 1).reshape(T, D), tw[p + "attn.wo.weight"])
        h = norm(x, tw[p + "mlp_norm.weight"])
        x = x + F.linear(F.silu(F.linear(h, tw[p + "mlp.w_gate.weight"])) * F.linear(h, tw[p + "mlp.w_up.weight"]),
                         tw[p + "mlp.w_down.weight"])
    out = F.linear(norm(x, tw["norm.weight"]), tw["lm_head.weight"]).numpy()
    return f"torch {torch.__version__}: max abs err {close(ref.forward(s, w, TOKENS), out, 1e-9, 'torch'):.2e}"


if __name__ == "__main__":
    # A check that returns a note starting with "SKIPPED" ran nothing: count it
    # as skipped, never as passed.
    passed = failed = skipped = 0
    for name, ok, note in RESULTS:
        status = "SKIP" if ok and note.startswith("SKIPPED") else ("PASS" if ok else "FAIL")
        passed += status == "PASS"
        failed += status == "FAIL"
        skipped += status == "SKIP"
        print(f"{status}  {name}" + (f"  [{note}]" if note else ""))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)
