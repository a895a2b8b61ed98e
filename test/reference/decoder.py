#!/usr/bin/python3
"""Independent numpy reference for lathe's standard pre-norm decoder and its options.

Written only from docs/model-and-weights.md (the contract) and, for the
`three_phase`, `attn_res` and `loop` spec keys, from ARCHITECTURES.md s2, s3,
s4.1 (parcae), s4.2 (loopformer) and s4.3 (loopus), and for the `--layer-parallel K`
execution option (idn_forward) from ARCHITECTURES.md s4.4 (SNLP Identity-Newton),
not from the compiler's sources. Everything is computed in float64.

attn_res kinds: delta (s2.3), full (s2.2 Full AttnRes), block (s2.2 Kimi Block
AttnRes, replacement routing) and delta_block (s2.4 Delta Block, the clean
definition, additive routing); the last two need `blocks: N_blocks`. The additive
kinds also take the s2.3 optional pieces `null_source: bool`, `gate: none |
sigmoid_scalar | sigmoid_vector | learnable_alpha` and `delta_v: bool` (see forward).
Every kind takes the s2.3 `entropy_bonus: lambda` (a number >= 0, default 0 = off): it
changes only the training objective (train.py loss: mean CE - lambda * mean routing
entropy), never the forward; forward(..., trace=tr) exposes the routing weights alpha
of every evaluated routing site as tr["routing_alpha"].
The parcae loop's training-only keys `backprop: k` (truncated backprop depth) and
`sample_max: N` (training-depth sampling, n ~ Poisson(iterations) clamped to [1, N]) change
no weight and no inference result; forward(..., iterations=n) runs a training draw of n
core passes and forward(..., frozen_state=h) holds h_{n - min(n, k)} (see forward).

CLI:
  decoder.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --compare L.npy [--rtol 1e-4] [--cached P]
  decoder.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --out REF.npy [--cached P]
  decoder.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --print-iterations   # iterations: K
  decoder.py --spec S.yaml --write-weights W.safetensors --seed N [--scale S] [--norm-jitter J]
  decoder.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --print-cached-iterations P
                                              # iterations: K_0 K_1 ... (one per row)
  decoder.py --spec S.yaml --print-widths     # per-layer MLP widths: widths=w0,w1,... (exit 1 on a bad spec)
  decoder.py --spec S.yaml --weights W.safetensors --tokens 1,2,3 --compare L.npy --layer-parallel K
                                              # SNLP IDN layer-parallel update, K iterations (idn_forward)

--cached P: the expected output of lathe's `cached-forward --prefill P` (cached_forward):
a prefill over tokens[:P] as one block, then tokens P.. decoded one at a time with a KV
cache. For every causal model (standard, attn_res, three_phase, parcae, loopformer) this
equals the plain forward. For loopus it is the s4.3 KV-cache rule ("all samples keep
stepping and the first-halt state is kept"): every position runs all N core passes (the
core's per-iteration K/V come from the un-frozen iterates h_k, as with halt mode none);
the prefill's halt decision is made on its last row P-1 (K_P passes) and EVERY prefill
row keeps h_{K_P}; a decoded token t keeps h_{K_t}[t] from its own decision; the coda
(Dec), final norm and head then run causally over the kept states X. Row t is therefore
NOT the last row of a forward over tokens[:t+1] (that forward gives every earlier row
row t's K, while the cache holds their Dec K/V from the states they kept).
--layer-parallel K: the expected output of `lathec --layer-parallel K` (idn_forward, s4.4):
the same model and weights, run as K Identity-Newton iterations over the whole depth trace
(h_l^(k+1) = h_0 + sum_{j<=l} g_j(h_{j-1}^(k)), starting from h_l^(0) = h_0). Standard decoder
only (three_phase, attn_res and loop specs are refused); K >= layers gives the plain forward.
Not combinable with --cached.
--print-iterations prints the number of core passes the whole-window forward runs
(loopus: decided by the last token; parcae / loopformer always run all);
--print-cached-iterations P prints the kept pass count of each row under --cached P
(rows < P all show K_P; parcae / loopformer: N everywhere).
"""
import argparse
import functools
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


# ---------------------------------------------------------------- spec

def load_spec(path):
    import yaml
    with open(path) as f:
        raw = yaml.safe_load(f)
    return make_spec(**raw)


OPTIONS = {  # spec key -> allowed values (first is the default)
    "norm.kind": ("rmsnorm", "layernorm"),
    "mlp.kind": ("swiglu", "gelu", "relu2"),
    "attention.normalizer": ("softmax", "softpick"),
    "position": ("rope", "learned"),
    "bias": (False, True),
    "tie_embeddings": (False, True),
}


def _option(key, value):
    allowed = OPTIONS[key]
    value = allowed[0] if value is None else value
    # bools must really be bools (YAML true/false), strings must be one of the names
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise ValueError(f"{key}: {value!r} is not one of {list(allowed)}")
    return value


def make_spec(name="model", vocab=256, d_model=64, layers=2, heads=4, kv_heads=None,
              max_seq=64, mlp=None, norm=None, rope=None, attention=None, position=None,
              bias=None, tie_embeddings=None, three_phase=None, attn_res=None, loop=None, **extra):
    """Normalise and check a spec dict (also handy for building test specs)."""
    mlp, norm, attention = dict(mlp or {}), dict(norm or {}), dict(attention or {})
    spec = {
        "name": str(name), "vocab": int(vocab), "d_model": int(d_model),
        "layers": int(layers), "heads": int(heads),
        "kv_heads": int(heads if kv_heads is None else kv_heads),
        "max_seq": int(max_seq),
        "mlp": {"kind": _option("mlp.kind", mlp.get("kind")), "width": int(mlp.get("width", 4 * d_model))},
        "norm": {"kind": _option("norm.kind", norm.get("kind")), "eps": float(norm.get("eps", 1e-5))},
        "rope": {"base": float((rope or {}).get("base", 10000.0))},
        "attention": {"normalizer": _option("attention.normalizer", attention.get("normalizer"))},
        "position": _option("position", position),
        "bias": _option("bias", bias),
        "tie_embeddings": _option("tie_embeddings", tie_embeddings),
    }
    taper = _taper_spec(mlp.get("taper"))
    if taper is not None:
        spec["mlp"]["taper"] = taper
    tp, ar = _three_phase_spec(three_phase), _attn_res_spec(attn_res)
    if tp is not None:
        spec["three_phase"] = tp
    if ar is not None:
        spec["attn_res"] = ar
    lp = _loop_spec(loop)
    if lp is not None:
        spec["loop"] = lp
    spec.update(extra)  # keep unknown keys visible rather than dropping them silently
    D, H, K = spec["d_model"], spec["heads"], spec["kv_heads"]
    if D % H or H % K:
        raise ValueError(f"need d_model % heads == 0 and heads % kv_heads == 0; got D={D} H={H} K={K}")
    if spec["position"] == "rope" and (D // H) % 2:
        raise ValueError(f"RoPE needs an even head dim; got {D // H}")
    if lp is not None:
        _check_loop(spec)   # before the taper check, so loop + taper names the conflict
    if taper is not None:
        mlp_widths(spec)  # raises ValueError for a taper that cannot be built
    if tp is not None:
        _check_three_phase(spec)
    if ar is not None and ar["kind"] in ("full", "block") and tp is not None:
        raise ValueError(f"attn_res.kind: {ar['kind']} cannot be combined with three_phase: the phase rotation "
                         f"acts on the residual stream, which {ar['kind']} (replacement) AttnRes does not have; "
                         f"use kind: delta or delta_block")
    if ar is not None and "blocks" in ar and ar["blocks"] > spec["layers"]:
        raise ValueError(f"attn_res.blocks = {ar['blocks']} must not exceed layers = {spec['layers']}")
    return spec


# ---------------------------------------------------------------- three_phase / attn_res spec keys
# ARCHITECTURES.md s3 (Three-Phase Transformer) and s2.1-s2.3 (attention residuals).

THREE_PHASE_DEFAULTS = {"phases": None, "horn": True}
ATTN_RES_KINDS = ("delta", "full", "block", "delta_block")
ATTN_RES_BLOCK_KINDS = ("block", "delta_block")      # these need attn_res.blocks
ATTN_RES_DEFAULTS = {"kind": None, "eps": 1e-6, "blocks": None, "null_source": False, "gate": "none",
                     "delta_v": False, "entropy_bonus": 0.0}
ATTN_RES_ADDITIVE_KINDS = ("delta", "delta_block")  # only these take null_source / gate / delta_v (s2.3)
ATTN_RES_OPTION_KEYS = ("null_source", "gate", "delta_v")
ATTN_RES_GATES = ("none", "sigmoid_scalar", "sigmoid_vector", "learnable_alpha")
ATTN_RES_GATE_INIT = -2.0    # s2.3: sigmoid_scalar a and sigmoid_vector b start at -2 (g = sigmoid(-2) ~ 0.12)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _three_phase_spec(tp):
    """Normalise three_phase: {phases: N, horn: bool (default true)}; None means off."""
    if tp is None:
        return None
    if not isinstance(tp, dict):
        raise ValueError(f"three_phase must be a mapping {{phases: N, horn: true|false}}, got {tp!r}")
    unknown = set(tp) - set(THREE_PHASE_DEFAULTS)
    if unknown:
        raise ValueError(f"three_phase: unknown keys {sorted(unknown)}; known: {list(THREE_PHASE_DEFAULTS)}")
    N, horn = tp.get("phases"), tp.get("horn", True)
    horn = True if horn is None else horn
    if not _is_int(N) or N < 1:
        raise ValueError(f"three_phase.phases must be a positive integer, got {N!r}")
    if not isinstance(horn, bool):
        raise ValueError(f"three_phase.horn must be true or false, got {horn!r}")
    return {"phases": int(N), "horn": horn}


def _check_three_phase(spec):
    """ARCHITECTURES.md s3.1/s3.4/s3.7 validity rules, plus what this reference needs."""
    N, D, H, K = spec["three_phase"]["phases"], spec["d_model"], spec["heads"], spec["kv_heads"]
    if D % N:
        raise ValueError(f"three_phase: d_model % phases must be 0; got d_model={D} phases={N}")
    if (D // N) % 2:
        raise ValueError(f"three_phase: the stripe width d_model/phases must be even; got {D}/{N} = {D // N}")
    if H % N or K % N:
        raise ValueError(f"three_phase: heads and kv_heads must be multiples of phases; "
                         f"got heads={H} kv_heads={K} phases={N}")
    if spec["norm"]["kind"] != "rmsnorm":
        raise ValueError(f"three_phase needs norm.kind: rmsnorm (PhaseAwareRMSNorm), got {spec['norm']['kind']}")
    if spec["position"] != "rope":
        raise ValueError(f"three_phase needs position: rope, got {spec['position']}")


def _attn_res_spec(ar):
    """Normalise attn_res: {kind: delta|full|block|delta_block, eps: 1e-6, blocks: N,
    null_source: false, gate: none, delta_v: false, entropy_bonus: 0.0}; None means off.

    kind is required. blocks (an integer >= 1, at most layers; checked in make_spec) is
    required for block and delta_block and refused for delta and full. The normalised
    mapping has the key blocks only for block and delta_block.

    null_source (bool), gate (none | sigmoid_scalar | sigmoid_vector | learnable_alpha) and
    delta_v (bool) are the s2.3 "optional pieces"; they are allowed only with the additive
    kinds delta and delta_block, and refused (even at their default value) with full and
    block. The normalised mapping holds each of them only when it differs from its default
    (so a spec without them normalises exactly as before they existed); readers use
    ar.get("null_source", False), ar.get("gate", "none"), ar.get("delta_v", False).
    A YAML null counts as the default.

    entropy_bonus (s2.3 "Entropy bonus: loss -= lambda * mean entropy(alpha)", off by default)
    is lambda, a finite number >= 0 (an integer is taken as a float; true/false are refused),
    allowed for EVERY kind since it only reads the routing weights. It never changes the
    forward; train.py's loss subtracts lambda times the mean routing entropy. Like the
    optional pieces it is kept (as a float) only when it is not 0, so readers use
    ar.get("entropy_bonus", 0.0).
    """
    if ar is None:
        return None
    if not isinstance(ar, dict):
        raise ValueError(f"attn_res must be a mapping {{kind: delta|full|block|delta_block, eps: 1.0e-6, "
                         f"blocks: N}}, got {ar!r}")
    unknown = set(ar) - set(ATTN_RES_DEFAULTS)
    if unknown:
        raise ValueError(f"attn_res: unknown keys {sorted(unknown)}; known: {list(ATTN_RES_DEFAULTS)}")
    kind, eps = ar.get("kind"), ar.get("eps", 1e-6)
    eps = 1e-6 if eps is None else eps
    if not isinstance(kind, str) or kind not in ATTN_RES_KINDS:
        raise ValueError(f"attn_res.kind: {kind!r} is not one of {list(ATTN_RES_KINDS)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"attn_res.eps must be a positive number, got {eps!r}")
    out = {"kind": kind, "eps": float(eps)}
    if kind in ATTN_RES_BLOCK_KINDS:
        nb = ar.get("blocks")
        if nb is None:
            raise ValueError(f"attn_res.blocks is required for kind: {kind} (an integer N_blocks >= 1, "
                             f"at most layers)")
        if not _is_int(nb) or nb < 1:
            raise ValueError(f"attn_res.blocks must be an integer >= 1, got {nb!r}")
        out["blocks"] = int(nb)
    elif "blocks" in ar:
        raise ValueError(f"attn_res.blocks is only allowed with kind: block or delta_block, not {kind} "
                         f"(which routes per sublayer)")
    given = [k for k in ATTN_RES_OPTION_KEYS if k in ar]
    if given and kind not in ATTN_RES_ADDITIVE_KINDS:
        raise ValueError(f"attn_res.{given[0]} is only allowed with the additive kinds delta and delta_block, "
                         f"not {kind} (replacement routing has no residual stream h_s to gate against or "
                         f"to add a null-source mixture to)")
    for k in ATTN_RES_OPTION_KEYS:              # the normalised mapping keeps this order
        v = ar.get(k)
        if v is None:
            continue
        if k == "gate":
            if not isinstance(v, str) or v not in ATTN_RES_GATES:
                raise ValueError(f"attn_res.gate: unknown gate {v!r}; known gates: {list(ATTN_RES_GATES)}")
        elif not isinstance(v, bool):
            raise ValueError(f"attn_res.{k} must be true or false, got {v!r}")
        if v != ATTN_RES_DEFAULTS[k]:
            out[k] = v
    lam = ar.get("entropy_bonus")
    if lam is not None:
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) \
                or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"attn_res.entropy_bonus must be a finite number >= 0 (lambda of "
                             f"loss -= lambda * mean entropy(alpha); 0 = off), got {lam!r}")
        if lam != 0:
            out["entropy_bonus"] = float(lam)
    return out


def attn_res_block_size(spec):
    """S_b = ceil(L / N_blocks) layers per block (s2.2 / s2.4); block b is layers b S_b .. (b+1) S_b - 1.

    The last block may be shorter, and only ceil(L / S_b) <= N_blocks blocks exist
    (e.g. L = 5, N_blocks = 4 gives S_b = 2 and blocks of 2, 2, 1 layers).
    """
    ar, L = spec["attn_res"], spec["layers"]
    return -(-L // ar["blocks"])


def attn_res_source_counts(spec):
    """(counts, final): how many sources each routing site sees.

    counts[s] is the number of candidate sources at sublayer s (s = 2l attention, 2l+1
    MLP); final is the count at the final site, None where there is none. A site with
    one source does no routing and owns no parameters (DepthAttn of one source is that
    source; the additive kinds then use x_s = h_s). forward() records the real list
    lengths in trace["n_src"] / trace["n_src_final"], and the tests compare.

      delta, full:  s + 1 ([h_0 or v_0, o_0 .. o_{s-1}]); final 2L + 1 for full, none for delta.
      block:        attention of layer l: 1 at l = 0, else (l-1) // S_b + 2 (blocks ++ [partial] before
                    the close); MLP of layer l: l // S_b + 2; final: (L-1) // S_b + 2.
      delta_block:  both sites of layer l: 1 + l // S_b ([h_0, Delta_0 .. Delta_{n-1}], n = completed
                    blocks); no final site.
    """
    ar, L = spec["attn_res"], spec["layers"]
    kind = ar["kind"]
    if kind in ("delta", "full"):
        return [s + 1 for s in range(2 * L)], (2 * L + 1 if kind == "full" else None)
    S = attn_res_block_size(spec)
    if kind == "block":
        counts = []
        for l in range(L):
            counts += [1 if l == 0 else (l - 1) // S + 2, l // S + 2]
        return counts, (L - 1) // S + 2
    return [1 + (s // 2) // S for s in range(2 * L)], None


def attn_res_sites(spec):
    """The routing sites that own parameters, as (s, l, site) with site "attn" or "mlp".

    Sublayer s = 2l is layer l's attention, s = 2l+1 its MLP. Only sites with at
    least 2 sources have parameters (attn_res_source_counts): delta, full and block:
    every s >= 1 (s = 0 has no routing under delta and a single source under full and
    block); delta_block: the sites of layers l >= S_b (before that only h_0 exists).
    The final site (full and block only) is attn_res_has_final.
    """
    if spec.get("attn_res") is None:
        return []
    counts, _ = attn_res_source_counts(spec)
    return [(s, s // 2, "mlp" if s % 2 else "attn") for s in range(2 * spec["layers"]) if counts[s] >= 2]


def attn_res_v_sites(spec):
    """delta_v's second attention sites, as (s, l, "attn_v"): one for every attention site
    (s = 2l) of attn_res_sites, none without delta_v. They see the same sources V_s as the
    attention site and own their own query / norm (and null / gate parameters)."""
    if spec.get("attn_res") is None or not spec["attn_res"].get("delta_v", False):
        return []
    return [(s, l, "attn_v") for s, l, site in attn_res_sites(spec) if site == "attn"]


def attn_res_gate_shapes(spec, prefix):
    """The gate tensors of one additive routing site `prefix` (e.g. "layers.1.attn_res.mlp"), as
    weight_shapes entries (s2.3): sigmoid_scalar {prefix}.gate [1] = -2; sigmoid_vector
    {prefix}.gate.weight [D, D] = 0 (nn.Linear layout) and {prefix}.gate.bias [D] = -2;
    learnable_alpha {prefix}.alpha [1] = 0; none: nothing."""
    D, gate = spec["d_model"], spec["attn_res"].get("gate", "none")
    if gate == "sigmoid_scalar":
        return {prefix + ".gate": ((1,), ("const", ATTN_RES_GATE_INIT))}
    if gate == "sigmoid_vector":
        return {prefix + ".gate.weight": ((D, D), "zeros"), prefix + ".gate.bias": ((D,), ("const", ATTN_RES_GATE_INIT))}
    if gate == "learnable_alpha":
        return {prefix + ".alpha": ((1,), "zeros")}
    return {}


def attn_res_has_final(spec):
    """True when there is a final routing site attn_res_final (full and block)."""
    if spec.get("attn_res") is None:
        return False
    _, final = attn_res_source_counts(spec)
    return final is not None and final >= 2


# ---------------------------------------------------------------- loop spec key (Parcae, LoopFormer)
# ARCHITECTURES.md s4.1. loop: {kind: parcae, prelude: P, core: C, coda: K, iterations: n}.
# Layers 0..P-1 are the prelude, P..P+C-1 the recurrent core (shared across iterations),
# P+C..L-1 the coda; D_s = D. All five keys are required. Two optional parcae-only keys
# concern training only and change no weight and no inference result: backprop: k
# (mu_bwd, an integer in [1, n]; default n) and sample_max: N (an integer >= n): in
# training each sequence's iteration count is drawn from Poisson(n) and clamped to
# [1, N] (s4.1 "Training-depth sampling"); evaluation and inference keep n = iterations.
# Without sample_max training also runs n. The normalised mapping holds backprop /
# sample_max only when given.
#
# ARCHITECTURES.md s4.2. loop: {kind: loopformer, iterations: M, trajectory: [d_1 .. d_M]}
# (inference only). All layers form one shared stack applied M times; trajectory is
# optional (default M copies of 1/M), else exactly M entries, each > 0, summing to 1
# within 1e-6. prelude / core / coda are refused. The normalised mapping always holds
# the trajectory as a list of floats (the given values, not renormalised). One optional
# loopformer-only key concerns training only and changes no weight and no inference
# result: shortcut: true|false (default false; s4.2 "Shortcut-consistency training":
# each step runs the long trajectory [1/M] * M and a given short one, and the objective is
# CE(long) + 0.1 CE(short) + 0.1 MSE(sg(x_long_final), x_short_final), see train.py loss).
# The normalised mapping holds shortcut (a bool) only when given; loopformer_shortcut(spec)
# reads it with its default.
#
# ARCHITECTURES.md s4.3. loop: {kind: loopus, prelude: P, core: C, coda: K, iterations: N,
# rank: r, halt: {mode, threshold, tolerance}}. prelude / core / coda / iterations as for
# parcae (encoder E = embedding + layers 0..P-1, reasoning block R = layers P..P+C-1,
# decoder Dec = the last K layers + final norm + head). rank defaults to ceil(d_model / 16)
# (filled in by _check_loop, which knows d_model); halt defaults to {mode: threshold,
# threshold: 0.9, tolerance: 0.01}, and the normalised halt mapping always holds all three
# keys, whatever the mode (threshold is used by threshold / cdf, tolerance by convergence).
# trajectory is refused. rank / halt are refused for parcae and loopformer.
# One more loopus-only key concerns training only and changes no weight and no inference
# result: supervision: {steps: NR, supervised: NS, beta: B} (s4.3 "Training: random deep
# supervision"; train.py loopus_supervision / loopus_train_step). steps (an integer >= 1,
# default loop.iterations) is the number of loop steps a training sequence may run, each
# train step supervises NS distinct indices drawn from 0 .. NR-1 (an integer in [1, NR],
# default min(5, NR)), and beta (a finite number, default 1.0) weighs SiLU(CE_new - CE_old).
# The normalised mapping holds supervision (all three keys, defaults filled in) only when
# the key is given; train.loopus_supervision(spec) reads it with its defaults.

LOOP_KINDS = ("parcae", "loopformer", "loopus")
LOOP_KEYS = ("kind", "prelude", "core", "coda", "iterations")          # parcae
LOOPFORMER_KEYS = ("kind", "iterations", "trajectory", "shortcut")
LOOPUS_KEYS = LOOP_KEYS + ("rank", "halt", "supervision")
LOOPUS_ONLY_KEYS = ("rank", "halt", "supervision")
LOOPUS_SUPERVISION_KEYS = ("steps", "supervised", "beta")
LOOPUS_SUPERVISED_DEFAULT = 5   # supervised defaults to min(5, steps) (s4.3: the script's n_sup = 5)
LOOPUS_BETA_DEFAULT = 1.0
PARCAE_ONLY_KEYS = ("backprop", "sample_max")                            # training-only parcae keys
LOOPUS_HALT_MODES = ("none", "threshold", "cdf", "convergence")
LOOPUS_HALT_DEFAULTS = {"mode": "threshold", "threshold": 0.9, "tolerance": 0.01}
LOOPUS_CONFIDENCE_EPS = 1e-5    # the confidence head's LayerNorm eps: fixed, not the spec's norm.eps
# Random init of the gate bias b = softplus^-1(Delta0): Delta0 log-uniform in [1e-3, 0.1], clamped >= 1e-4.
LOOPUS_DT_MIN, LOOPUS_DT_MAX, LOOPUS_DT_FLOOR = 1e-3, 0.1, 1e-4
LOOPFORMER_TRAJECTORY_TOL = 1e-6
LOOPFORMER_FREQS = 128          # phi(s) has 2 * 128 = 256 features
LOOPFORMER_MODS = ("attn_gate", "mlp_gate", "attn_scale", "mlp_scale")   # s4.2's [g_a, g_m, s_a, s_m]
# dt_bias init: softplus(dt_bias) = Delta0 = -ln(sqrt(1/5)) = ln(5)/2, so Abar0 = exp(-Delta0) = sqrt(1/5)
# and dt_bias = softplus^-1(Delta0) = ln(expm1(Delta0)) = ln(sqrt(5) - 1).
PARCAE_DELTA_INIT = -math.log(math.sqrt(1.0 / 5.0))
PARCAE_DT_BIAS_INIT = math.log(math.expm1(PARCAE_DELTA_INIT))


def _loop_spec(lp):
    """Normalise loop: {kind: parcae|loopus, prelude, core, coda, iterations (, rank, halt)} or
    {kind: loopformer, iterations, trajectory}; None means off."""
    if lp is None:
        return None
    if not isinstance(lp, dict):
        raise ValueError(f"loop must be a mapping {{kind: parcae, prelude: P, core: C, coda: K, iterations: n}}, "
                         f"got {lp!r}")
    unknown = set(lp) - set(LOOP_KEYS) - set(LOOPFORMER_KEYS) - set(LOOPUS_KEYS) - set(PARCAE_ONLY_KEYS)
    if unknown:
        raise ValueError(f"loop: unknown keys {sorted(unknown, key=str)}; known: parcae "
                         f"{list(LOOP_KEYS) + list(PARCAE_ONLY_KEYS)}, "
                         f"loopformer {list(LOOPFORMER_KEYS)}, loopus {list(LOOPUS_KEYS)}")
    kind = lp.get("kind")
    if not isinstance(kind, str) or kind not in LOOP_KINDS:
        raise ValueError(f"loop.kind: {kind!r} is not one of {list(LOOP_KINDS)} (unknown loop kind)")
    if kind != "loopus":
        for k in LOOPUS_ONLY_KEYS:
            if k in lp:
                raise ValueError(f"loop.{k} is only allowed with kind: loopus, not {kind}")
    if kind != "parcae":
        for k in PARCAE_ONLY_KEYS:
            if k in lp:
                raise ValueError(f"loop.{k} is only allowed with kind: parcae, not {kind}")
    if kind == "loopformer":
        return _loopformer_spec(lp)
    if "shortcut" in lp:
        raise ValueError(f"loop.shortcut is only allowed with kind: loopformer, not {kind}")
    if "trajectory" in lp:
        raise ValueError(f"loop.trajectory is only allowed with kind: loopformer, not {kind}")
    out = {"kind": kind}
    for k, lo in (("prelude", 0), ("core", 1), ("coda", 0), ("iterations", 1)):
        v = lp.get(k)
        if v is None:
            raise ValueError(f"loop.{k} is required (an integer >= {lo})")
        if not _is_int(v):
            raise ValueError(f"loop.{k} must be an integer >= {lo}, got {v!r}")
        if v < lo:
            raise ValueError(f"loop.{k} must be >= {lo}, got {v}")
        out[k] = int(v)
    if "backprop" in lp:      # parcae truncated backprop depth k (s4.1); forward ignores it
        b = lp["backprop"]
        if not _is_int(b) or not 1 <= b <= out["iterations"]:
            raise ValueError(f"loop.backprop must be an integer in [1, iterations = {out['iterations']}], "
                             f"got {b!r}")
        out["backprop"] = int(b)
    if "sample_max" in lp:    # parcae training-depth sampling: n ~ Poisson(iterations) clamped to [1, N]
        m = lp["sample_max"]
        if not _is_int(m) or m < out["iterations"]:
            raise ValueError(f"loop.sample_max must be an integer >= iterations = {out['iterations']}, "
                             f"got {m!r}")
        out["sample_max"] = int(m)
    if kind == "loopus":
        r = lp.get("rank")
        if r is not None and (not _is_int(r) or r < 1):
            raise ValueError(f"loop.rank must be an integer >= 1, got {r!r}")
        out["rank"] = None if r is None else int(r)     # None: ceil(d_model / 16), filled in by _check_loop
        out["halt"] = _loopus_halt_spec(lp.get("halt"))
        if "supervision" in lp:   # training only (s4.3 random deep supervision); forward ignores it
            out["supervision"] = loopus_supervision_spec(lp["supervision"], out["iterations"])
    return out


def loopus_supervision_spec(sup, iterations):
    """Normalise loop.supervision: {steps: NR, supervised: NS, beta: B} with its defaults.

    None (or a missing key) takes the default: steps = iterations (the loop's inference
    iteration count), supervised = min(5, steps), beta = 1.0. steps: an integer >= 1;
    supervised: an integer in [1, steps]; beta: a finite number. Returns all three keys.
    """
    if sup is None:
        sup = {}
    if not isinstance(sup, dict):
        raise ValueError(f"loop.supervision must be a mapping {{steps: NR, supervised: NS, beta: B}}, got {sup!r}")
    unknown = set(sup) - set(LOOPUS_SUPERVISION_KEYS)
    if unknown:
        raise ValueError(f"loop.supervision: unknown keys {sorted(unknown, key=str)}; "
                         f"known: {list(LOOPUS_SUPERVISION_KEYS)}")
    steps = sup.get("steps")
    steps = iterations if steps is None else steps
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"loop.supervision.steps must be an integer >= 1, got {steps!r}")
    steps = int(steps)
    ns = sup.get("supervised")
    ns = min(LOOPUS_SUPERVISED_DEFAULT, steps) if ns is None else ns
    if not _is_int(ns) or not 1 <= ns <= steps:
        raise ValueError(f"loop.supervision.supervised must be an integer in [1, steps = {steps}], got {ns!r}")
    beta = sup.get("beta")
    beta = LOOPUS_BETA_DEFAULT if beta is None else beta
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not math.isfinite(beta):
        raise ValueError(f"loop.supervision.beta must be a finite number, got {beta!r}")
    return {"steps": steps, "supervised": int(ns), "beta": float(beta)}


def _loopus_halt_spec(halt):
    """Normalise loop.halt: {mode: none|threshold|cdf|convergence, threshold: tau, tolerance: eps}.

    Missing (or null) keys take LOOPUS_HALT_DEFAULTS. threshold must lie in [0, 1] (it is
    compared with a probability: q_k or the cdf 1 - prod(1 - q_j)); tolerance must be > 0.
    """
    if halt is None:
        return dict(LOOPUS_HALT_DEFAULTS)
    if not isinstance(halt, dict):
        raise ValueError(f"loop.halt must be a mapping {{mode: none|threshold|cdf|convergence, threshold: 0.9, "
                         f"tolerance: 0.01}}, got {halt!r}")
    unknown = set(halt) - set(LOOPUS_HALT_DEFAULTS)
    if unknown:
        raise ValueError(f"loop.halt: unknown keys {sorted(unknown, key=str)}; known: {list(LOOPUS_HALT_DEFAULTS)}")
    h = dict(LOOPUS_HALT_DEFAULTS, **{k: v for k, v in halt.items() if v is not None})
    if not isinstance(h["mode"], str) or h["mode"] not in LOOPUS_HALT_MODES:
        raise ValueError(f"loop.halt.mode: {h['mode']!r} is not one of {list(LOOPUS_HALT_MODES)}")
    for k in ("threshold", "tolerance"):
        v = h[k]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"loop.halt.{k} must be a finite number, got {v!r}")
        h[k] = float(v)
    if not 0.0 <= h["threshold"] <= 1.0:
        raise ValueError(f"loop.halt.threshold must lie in [0, 1] (it is compared with a probability), "
                         f"got {h['threshold']}")
    if h["tolerance"] <= 0:
        raise ValueError(f"loop.halt.tolerance must be > 0, got {h['tolerance']}")
    return h


def parcae_iterations(spec, iterations=None):
    """n: the core passes a parcae forward runs. None: loop.iterations (evaluation and
    inference, and training without sample_max). Otherwise a training draw: an integer >= 1,
    and <= loop.sample_max when the spec has one. ValueError for a non-parcae spec or a bad n."""
    lp = spec.get("loop")
    if lp is None or lp["kind"] != "parcae":
        raise ValueError("iterations (the parcae core pass count) is only for parcae loops")
    if iterations is None:
        return lp["iterations"]
    if not _is_int(iterations) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if "sample_max" in lp and iterations > lp["sample_max"]:
        raise ValueError(f"iterations = {iterations} exceeds loop.sample_max = {lp['sample_max']}")
    return int(iterations)


def parcae_sample_iterations(spec, rng):
    """One training draw of n (s4.1 "Training-depth sampling"): Poisson(loop.iterations) clamped
    to [1, loop.sample_max]; loop.iterations without sample_max. rng: a numpy Generator (lathe's
    draws come from its own generator, so only the distribution is comparable)."""
    lp = spec["loop"]
    n = parcae_iterations(spec)
    if "sample_max" not in lp:
        return n
    return int(min(max(int(rng.poisson(n)), 1), lp["sample_max"]))


def parcae_backprop(spec, iterations=None):
    """Parcae's truncated backprop depth k = min(n, loop.backprop), n =
    parcae_iterations(spec, iterations) the core passes actually run (default
    loop.iterations); without the backprop key, k = n: full backprop for every n.
    The gradient treats h_{n-k} (the state after n - k core passes, trace["h"][n - k]) as a
    constant; the forward value does not depend on k. None for non-parcae specs."""
    lp = spec.get("loop")
    if lp is None or lp["kind"] != "parcae":
        return None
    n = parcae_iterations(spec, iterations)
    return min(n, lp.get("backprop", n))


def frozen_state_index(spec, iterations=None):
    """n - k = n - min(n, backprop): the index into trace["h"] of the state held constant by
    truncated backprop, for a run of n = parcae_iterations(spec, iterations) core passes."""
    n = parcae_iterations(spec, iterations)
    return n - parcae_backprop(spec, n)


def is_loopus(spec):
    lp = spec.get("loop")
    return lp is not None and lp["kind"] == "loopus"


def _loopformer_spec(lp):
    """Normalise loop: {kind: loopformer, iterations: M, trajectory: [d_1 .. d_M] (optional)}."""
    for k in ("prelude", "core", "coda"):
        if k in lp:
            raise ValueError(f"loop.{k} is not allowed for kind: loopformer (all layers form one shared stack "
                             f"applied `iterations` times)")
    M = lp.get("iterations")
    if M is None:
        raise ValueError("loop.iterations is required (an integer >= 1)")
    if not _is_int(M):
        raise ValueError(f"loop.iterations must be an integer >= 1, got {M!r}")
    if M < 1:
        raise ValueError(f"loop.iterations must be >= 1, got {M}")
    M = int(M)
    out = {"kind": "loopformer", "iterations": M}
    tr = lp.get("trajectory")
    if tr is None:
        out["trajectory"] = [1.0 / M] * M
    else:
        if isinstance(tr, (list, tuple)) and len(tr) != M:
            raise ValueError(f"loop.trajectory has {len(tr)} entries, must have exactly iterations = {M}")
        out["trajectory"] = check_trajectory(tr, "loop.trajectory", f"a list of {M} step sizes")
    if "shortcut" in lp:      # training only (s4.2 shortcut-consistency); forward ignores it
        sc = lp["shortcut"]
        if not isinstance(sc, (bool, np.bool_)):
            raise ValueError(f"loop.shortcut must be true or false, got {sc!r}")
        out["shortcut"] = bool(sc)
    return out


def check_trajectory(tr, what="trajectory", expect="a list of step sizes"):
    """A LoopFormer trajectory as a list of floats: a non-empty list / tuple of finite numbers,
    each > 0, summing to 1 within LOOPFORMER_TRAJECTORY_TOL (the given values, not renormalised).
    ValueError naming `what` otherwise."""
    if not isinstance(tr, (list, tuple)):
        raise ValueError(f"{what} must be {expect}, got {tr!r}")
    if len(tr) == 0:
        raise ValueError(f"{what} has 0 entries, must be {expect}")
    for i, d in enumerate(tr):
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, float, np.integer, np.floating)) \
                or not math.isfinite(d):
            raise ValueError(f"{what}[{i}] must be a finite number, got {d!r}")
        if d <= 0:
            raise ValueError(f"{what}[{i}] = {d} must be > 0 (step sizes are positive)")
    total = math.fsum(float(d) for d in tr)
    if abs(total - 1.0) > LOOPFORMER_TRAJECTORY_TOL:
        raise ValueError(f"{what} must sum to 1 (within {LOOPFORMER_TRAJECTORY_TOL:g}), got {total!r}")
    return [float(d) for d in tr]


def loopformer_shortcut(spec):
    """True when the spec is a LoopFormer with loop.shortcut: true (shortcut-consistency training)."""
    return is_loopformer(spec) and bool(spec["loop"].get("shortcut", False))


def loopformer_schedule(spec, trajectory=None):
    """[(t_{m-1}, d_m)] for m = 1 .. M: t_0 = 0, t_m = t_{m-1} + d_m (s4.2). trajectory: the
    step sizes to use instead of the spec's (already validated, see check_trajectory)."""
    out, t = [], 0.0
    for d in (spec["loop"]["trajectory"] if trajectory is None else trajectory):
        out.append((t, d))
        t += d
    return out


def is_loopformer(spec):
    lp = spec.get("loop")
    return lp is not None and lp["kind"] == "loopformer"


def _check_loop(spec):
    lp, L = spec["loop"], spec["layers"]
    if lp["kind"] == "loopformer":
        if spec["norm"]["kind"] != "rmsnorm":
            raise ValueError(f"loop kind loopformer needs norm.kind: rmsnorm (its block norms are gain-free "
                             f"RMSNorms), got {spec['norm']['kind']}")
    else:
        P, C, K = lp["prelude"], lp["core"], lp["coda"]
        if P + C + K != L:
            raise ValueError(f"loop: prelude + core + coda = {P} + {C} + {K} = {P + C + K} "
                             f"must equal layers = {L}")
        if lp["kind"] == "loopus" and lp["rank"] is None:
            lp["rank"] = -(-spec["d_model"] // 16)                  # r = ceil(D / 16)
    if spec["mlp"].get("taper") is not None:
        raise ValueError("loop cannot be combined with mlp.taper: the core's weights are shared across "
                         "iterations, so a per-layer width taper is not defined for a looped model")
    for key in ("attn_res", "three_phase"):
        if spec.get(key) is not None:
            raise ValueError(f"loop cannot be combined with {key}: ARCHITECTURES.md does not define it "
                             f"for looped models")


def loop_parts(spec):
    """(prelude, core, coda) layer index ranges; (range(L), range(0), range(0)) without loop.

    loopformer: the whole stack is the shared core, (range(0), range(L), range(0)).
    loopus: (E's layers, R's layers, Dec's layers), like parcae.
    """
    lp, L = spec.get("loop"), spec["layers"]
    if lp is None:
        return range(L), range(0), range(0)
    if lp["kind"] == "loopformer":
        return range(0), range(L), range(0)
    P, C = lp["prelude"], lp["core"]
    return range(P), range(P, P + C), range(P + C, L)


def softplus(z):
    return np.logaddexp(0.0, z)


def loopformer_phi(s):
    """phi(s) = [cos(s f_0 .. f_127), sin(s f_0 .. f_127)], f_j = exp(-ln(1e4) j / 128) (s4.2; raw s)."""
    f = np.exp(-math.log(1e4) * np.arange(LOOPFORMER_FREQS) / LOOPFORMER_FREQS)
    return np.concatenate([np.cos(s * f), np.sin(s * f)])


def parcae_discretize(A_log, dt_bias):
    """(Delta, Abar) of s4.1: Delta = softplus(dt_bias), Abar = exp(-Delta exp(A_log)) in (0, 1)."""
    A_log, dt_bias = np.asarray(A_log, np.float64), np.asarray(dt_bias, np.float64)
    delta = softplus(dt_bias)
    return delta, np.exp(-delta * np.exp(A_log))


def sigmoid(z):
    """1 / (1 + e^-z) without overflow for either sign."""
    z = np.asarray(z, np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def loopus_gate(delta, w_down, w_up, b, A_log):
    """(Dt, Abar) of the s4.3 selective gate for delta [..., D].

    Dt = softplus(W_up (W_down delta) + b), W_down [r, D] (no bias), W_up [D, r], b [D];
    Abar = exp(-Dt * exp(A_log)), in [0, 1] (in (0, 1) up to float under/overflow).
    """
    z = (np.asarray(delta, np.float64) @ np.asarray(w_down, np.float64).T) @ np.asarray(w_up, np.float64).T + b
    dt = softplus(z)
    return dt, np.exp(-dt * np.exp(np.asarray(A_log, np.float64)))


def loopus_mix(u, h, abar):
    """h_{k+1} = Abar * u + (1 - Abar) * h_k (s4.3): the convex mix of the proposal u and the previous state."""
    return abar * u + (1.0 - abar) * h


def loopus_confidence(delta_last, g, beta, w_q, b_q):
    """q_k = sigmoid(w_q . LayerNorm(delta) + b_q) for one row delta [D]; LayerNorm with affine, eps 1e-5."""
    z = layernorm(np.asarray(delta_last, np.float64), g, beta, LOOPUS_CONFIDENCE_EPS)
    return float(sigmoid(np.asarray(w_q, np.float64).reshape(-1) @ z + float(np.asarray(b_q).reshape(-1)[0])))


def loopus_halt_statistic(halt, qs, h_new_last, h_old_last):
    """(statistic, threshold, halts) after iteration k = len(qs) - 1 (s4.3 halting at inference).

    threshold:   q_k > tau;
    cdf:         1 - prod_{j<=k} (1 - q_j) > tau;
    convergence: ||h_{k+1}[n-1] - h_k[n-1]||_2 < tolerance;
    none:        never halts (the statistic is q_k, for information; the threshold is None).
    """
    mode = halt["mode"]
    if mode == "convergence":
        stat = float(np.linalg.norm(np.asarray(h_new_last, np.float64) - np.asarray(h_old_last, np.float64)))
        return stat, halt["tolerance"], stat < halt["tolerance"]
    if mode == "cdf":
        stat = 1.0 - float(np.prod([1.0 - q for q in qs]))
        return stat, halt["threshold"], stat > halt["threshold"]
    if mode == "none":
        return qs[-1], None, False
    return qs[-1], halt["threshold"], qs[-1] > halt["threshold"]


# ---------------------------------------------------------------- tapered MLP widths
# docs/model-and-weights.md "Tapered MLP widths (`mlp.taper`)" and ARCHITECTURES.md s1.2.

TAPER_SCHEDULES = ("cosine", "linear", "sigmoid")
TAPER_DEFAULTS = {"schedule": "cosine", "max": 1.5, "min": 0.5, "multiple": 64}


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def taper_profile(L, schedule, r_max, r_min):
    """The profile s(l), l = 0 .. L-1 (u = l / (L-1)), before normalisation."""
    if schedule not in TAPER_SCHEDULES:
        raise ValueError(f"mlp.taper.schedule: {schedule!r} is not one of {list(TAPER_SCHEDULES)}")
    if L < 2:
        raise ValueError(f"mlp.taper needs layers >= 2, got {L}")
    out = []
    for l in range(L):
        u = l / (L - 1)
        if schedule == "cosine":
            s = r_min + (r_max - r_min) * 0.5 * (1.0 + math.cos(math.pi * u))
        elif schedule == "linear":
            s = r_max + (r_min - r_max) * u
        else:
            s = r_min + (r_max - r_min) * (_sig(10.0 * (0.5 - u)) - _sig(-5.0)) / (_sig(5.0) - _sig(-5.0))
        out.append(s)
    return out


def round_widths(raw, total, m):
    """Largest-remainder rounding of raw widths to multiples of m with sum exactly total.

    f_l = m floor(w_l / m); the k = (total - sum f) / m layers with the largest
    remainders w_l - f_l get one more m, earlier layers first on ties. The
    result must be positive and non-increasing.
    """
    L = len(raw)
    if total % m:
        raise ValueError(f"mlp.taper: layers * width = {total} is not a multiple of {m}")
    # the tiny slack only keeps a width that is an exact multiple in real arithmetic
    # (e.g. 1.5 * 3072 = 4608) from flooring to the multiple below through float error
    floors = [m * int(math.floor(w / m + 1e-9)) for w in raw]
    k, rest = divmod(total - sum(floors), m)
    assert rest == 0
    if not 0 <= k <= L:
        raise ValueError(f"mlp.taper: rounding needs {k} extra multiples of {m} for {L} layers")
    # Remainders that are equal in exact arithmetic are ties and go to the earlier layer.
    # Float noise must not break them: for L=4, w_base=128, m=64 (cosine 1.5/0.5) the raw
    # widths are 192, 160, 96.00000000000001, 64, so a plain float comparison would hand
    # the extra 64 to layer 2 ([192,128,128,64]) instead of layer 1 ([192,192,64,64]).
    rem = [w - f for w, f in zip(raw, floors)]
    tol = 1e-9 * m

    def by_remainder(a, b):  # larger remainder first; within tol, earlier layer first
        d = rem[b] - rem[a]
        return (1 if d > 0 else -1) if abs(d) > tol else a - b

    order = sorted(range(L), key=functools.cmp_to_key(by_remainder))
    widths = list(floors)
    for l in order[:k]:
        widths[l] += m
    assert sum(widths) == total
    bad = [l for l in range(L) if widths[l] <= 0]
    if bad:
        raise ValueError(f"mlp.taper: layer {bad[0]} would get width {widths[bad[0]]} <= 0 "
                         f"(widths {widths}); raise mlp.width or mlp.taper.min, or lower the multiple")
    for l in range(L - 1):
        if widths[l] < widths[l + 1]:
            raise ValueError(f"mlp.taper: widths are not non-increasing at layer {l}: {widths}")
    return widths


def taper_raw_widths(L, w_base, schedule="cosine", r_max=1.5, r_min=0.5):
    """w_l = w_base * L * s(l) / sum_j s(j) (floats, before rounding)."""
    s = taper_profile(L, schedule, r_max, r_min)
    tot = math.fsum(s)
    return [w_base * L * v / tot for v in s]


def taper_widths(L, w_base, schedule="cosine", r_max=1.5, r_min=0.5, multiple=64):
    """Per-layer MLP widths (list of int) whose sum is exactly L * w_base."""
    if L < 2:
        raise ValueError(f"mlp.taper needs layers >= 2, got {L}")
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"mlp.taper.multiple must be a positive integer, got {multiple!r}")
    if isinstance(w_base, bool) or not isinstance(w_base, (int, np.integer)) or w_base < 1:
        raise ValueError(f"mlp.width must be a positive integer, got {w_base!r}")
    if not (math.isfinite(r_max) and math.isfinite(r_min)):
        raise ValueError(f"mlp.taper: max and min must be finite, got max={r_max} min={r_min}")
    if r_min <= 0:
        raise ValueError(f"mlp.taper.min must be > 0, got {r_min}")
    if r_max < r_min:
        raise ValueError(f"mlp.taper: need max >= min, got max={r_max} min={r_min}")
    total = L * int(w_base)
    if total % multiple:
        raise ValueError(f"mlp.taper: layers * width = {L} * {w_base} = {total} is not a multiple of {multiple}")
    return round_widths(taper_raw_widths(L, w_base, schedule, r_max, r_min), total, int(multiple))


def _taper_spec(taper):
    """Normalise the mlp.taper mapping (defaults filled in); None means no taper."""
    if taper is None:
        return None
    if not isinstance(taper, dict):
        raise ValueError(f"mlp.taper must be a mapping, got {taper!r}")
    unknown = set(taper) - set(TAPER_DEFAULTS)
    if unknown:
        raise ValueError(f"mlp.taper: unknown keys {sorted(unknown)}; known: {list(TAPER_DEFAULTS)}")
    t = dict(TAPER_DEFAULTS, **{k: v for k, v in taper.items() if v is not None})
    if not isinstance(t["schedule"], str) or t["schedule"] not in TAPER_SCHEDULES:
        raise ValueError(f"mlp.taper.schedule: {t['schedule']!r} is not one of {list(TAPER_SCHEDULES)}")
    for k in ("max", "min"):
        if isinstance(t[k], bool) or not isinstance(t[k], (int, float)):
            raise ValueError(f"mlp.taper.{k} must be a number, got {t[k]!r}")
        t[k] = float(t[k])
    if isinstance(t["multiple"], bool) or not isinstance(t["multiple"], int):
        raise ValueError(f"mlp.taper.multiple must be an integer, got {t['multiple']!r}")
    return t


def mlp_widths(spec):
    """MLP hidden width of each layer: mlp.width everywhere, or the tapered widths."""
    L, F, t = spec["layers"], spec["mlp"]["width"], spec["mlp"].get("taper")
    if t is None:
        return [F] * L
    return taper_widths(L, F, t["schedule"], t["max"], t["min"], t["multiple"])


# ---------------------------------------------------------------- weights

def weight_shapes(spec):
    """Documented name -> (shape, init): a std, "ones", "zeros", "identity", ("const", value),
    ("uniform", bound, p) (U(+-bound * scale^p)), ("log_arange",) or ("softplus_inv_loguniform", lo, hi,
    floor) (see init_weights)."""
    V, D, L = spec["vocab"], spec["d_model"], spec["layers"]
    H, K = spec["heads"], spec["kv_heads"]
    widths = mlp_widths(spec)                       # layer l's MLP width (all mlp.width without taper)
    Dh = D // H
    out_std = 0.02 / np.sqrt(2 * L) if L else 0.02
    ln, bias, swiglu = spec["norm"]["kind"] == "layernorm", spec["bias"], spec["mlp"]["kind"] == "swiglu"
    s = {"embed.weight": ((V, D), 0.02)}

    def norm(n):
        s[n + ".weight"] = ((D,), "ones")
        if ln:
            s[n + ".bias"] = ((D,), "zeros")

    def linear(n, out, inp, std):
        s[n + ".weight"] = ((out, inp), std)
        if bias:
            s[n + ".bias"] = ((out,), "zeros")

    lf = is_loopformer(spec)         # LoopFormer blocks' norms have no gain: no attn_norm / mlp_norm
    for l in range(L):
        p, F = f"layers.{l}.", widths[l]
        if not lf:
            norm(p + "attn_norm")
        linear(p + "attn.wq", H * Dh, D, 0.02)
        linear(p + "attn.wk", K * Dh, D, 0.02)
        linear(p + "attn.wv", K * Dh, D, 0.02)
        linear(p + "attn.wo", D, H * Dh, out_std)
        if not lf:
            norm(p + "mlp_norm")
        if swiglu:
            linear(p + "mlp.w_gate", F, D, 0.02)
        linear(p + "mlp.w_up", F, D, 0.02)
        linear(p + "mlp.w_down", D, F, out_std)
    norm("norm")
    if not spec["tie_embeddings"]:
        s["lm_head.weight"] = ((V, D), 0.02)
    if spec["position"] == "learned":
        s["pos_embed.weight"] = ((spec["max_seq"], D), 0.01)
    # New options come last so the draws of the other tensors do not depend on them.
    tp, ar = spec.get("three_phase"), spec.get("attn_res")
    if tp is not None:
        for l in range(L):   # theta_l[k] = (l+1) pi / (2L), one angle per pair, shared by the stripes
            s[f"layers.{l}.rotation.theta"] = ((D // (2 * tp["phases"]),), ("const", (l + 1) * np.pi / (2 * L)))
    if ar is not None:
        for _, l, site in attn_res_sites(spec):
            s[f"layers.{l}.attn_res.{site}.query"] = ((D,), "zeros")
            s[f"layers.{l}.attn_res.{site}.norm"] = ((D,), "ones")
        if attn_res_has_final(spec):
            s["attn_res_final.query"] = ((D,), "zeros")
            s["attn_res_final.norm"] = ((D,), "ones")
        # s2.3 optional pieces (delta / delta_block only), after every tensor above so that
        # turning them on leaves all other draws unchanged: first the nulls of the attn / mlp
        # sites, then their gates, then each delta_v site's query, norm, null and gate (so
        # delta_v changes no other draw either).
        sites = [f"layers.{l}.attn_res.{site}" for _, l, site in attn_res_sites(spec)]
        if ar.get("null_source", False):
            for n in sites:
                s[n + ".null"] = ((D,), "zeros")
        for n in sites:
            s.update(attn_res_gate_shapes(spec, n))
        for _, l, _ in attn_res_v_sites(spec):
            n = f"layers.{l}.attn_res.attn_v"
            s[n + ".query"] = ((D,), "zeros")
            s[n + ".norm"] = ((D,), "ones")
            if ar.get("null_source", False):
                s[n + ".null"] = ((D,), "zeros")
            s.update(attn_res_gate_shapes(spec, n))
    if lf:   # ARCHITECTURES.md s4.2; these linears always have biases, whatever `bias` says
        for e in ("time_embed", "step_embed"):
            s[e + ".w1.weight"] = ((D, 2 * LOOPFORMER_FREQS), 0.02)
            s[e + ".w1.bias"] = ((D,), "zeros")
            s[e + ".w2.weight"] = ((D, D), 0.02)
            s[e + ".w2.bias"] = ((D,), "zeros")
        for l in range(L):   # true adaLN-Zero: weight AND bias zero (the released code re-inits weights)
            for m in LOOPFORMER_MODS:
                s[f"layers.{l}.mod.{m}.weight"] = ((D, D), "zeros")
                s[f"layers.{l}.mod.{m}.bias"] = ((D,), "zeros")
    elif is_loopus(spec):   # ARCHITECTURES.md s4.3; the listed biases only, whatever `bias` says
        r = spec["loop"]["rank"]
        s["gate.down.weight"] = ((r, D), ("uniform", D ** -0.5, 0.5))     # bound * sqrt(scale): see init_weights
        s["gate.up.weight"] = ((D, r), ("uniform", r ** -0.5, 0.0))       # bound not scaled
        s["gate.up.bias"] = ((D,), ("softplus_inv_loguniform", LOOPUS_DT_MIN, LOOPUS_DT_MAX, LOOPUS_DT_FLOOR))
        s["gate.A_log"] = ((D,), ("log_arange",))
        s["confidence.norm.weight"] = ((D,), "ones")        # LayerNorm with affine, whatever norm.kind says
        s["confidence.norm.bias"] = ((D,), "zeros")
        s["confidence.weight"] = ((1, D), ("uniform", D ** -0.5, 1.0))
        s["confidence.bias"] = ((1,), ("uniform", D ** -0.5, 1.0))
    elif spec.get("loop") is not None:   # ARCHITECTURES.md s4.1 (D_s = D); no biases even with bias: true
        norm("prelude_norm")
        s["injection.A_log"] = ((D,), "zeros")
        s["injection.dt_bias"] = ((D,), ("const", PARCAE_DT_BIAS_INIT))
        s["injection.B"] = ((D, D), "identity")
        s["coda_proj.weight"] = ((D, D), "identity")
    return s


def init_weights(spec, seed=0, scale=1.0, norm_jitter=0.0):
    """Random float32 weights with the documented names, shapes and init.

    scale multiplies every std; the documented std 0.02 leaves attention
    almost uniform, so tests that want RoPE/attention errors to show up in the
    logits should use a larger scale. With scale != 1, tensors documented as
    zeros (linear and layernorm biases) are drawn from normal(0, 0.02 * scale)
    so an ignored bias shows up. norm_jitter > 0 draws norm gains from
    1 + normal(0, norm_jitter) instead of ones, so ignored gains are caught.
    For the default options the draws are the same as before options existed.

    attn_res queries are "zeros" (so normal(0, 0.02 * scale) when scale != 1) and
    their norm gains "ones" (jittered like the other gains), for every kind; only
    sites with >= 2 sources have them (attn_res_sites, attn_res_has_final). The s2.3
    optional pieces (delta / delta_block; drawn after every other tensor, see weight_shapes)
    use the same generic rules: null_source's {site}.null is "zeros" (normal(0, 0.02 * scale)
    when scale != 1); sigmoid_scalar's {site}.gate [1] and sigmoid_vector's {site}.gate.bias [D]
    are the constant -2 (+ normal(0, 0.02 * scale) when scale != 1, so g = sigmoid(-2 +- 0.2)
    ~ 0.1 .. 0.15 at scale 10, per channel for the bias); sigmoid_vector's {site}.gate.weight
    [D, D] is "zeros" (normal(0, 0.02 * scale) when scale != 1, so the gate then depends on
    h_s, per token and channel); learnable_alpha's {site}.alpha [1] is "zeros" (0, the exact
    identity at init; normal(0, 0.02 * scale) when scale != 1); delta_v's
    layers.{l}.attn_res.attn_v.query / .norm are "zeros" / "ones" like every routing site.
    At scale 1 (the real init) none of them is random; with scale != 1 every one of them
    differs from its init so that a compiler ignoring any piece shows up. three_phase angles
    theta_l are the constant (l+1) pi / (2L); with scale != 1 each angle gets
    normal(0, 0.02 * scale) added so that a per-pair indexing error shows up.

    loop (Parcae): prelude_norm is a norm like the others (gain "ones", layernorm
    bias "zeros"); injection.A_log is "zeros"; injection.dt_bias is the constant
    ln(sqrt(5) - 1) (Delta = ln(5)/2, Abar = sqrt(1/5)), plus normal(0, 0.02 * scale)
    when scale != 1; injection.B and coda_proj.weight are "identity", plus
    normal(0, 0.02 * scale) on every entry when scale != 1.

    loop (LoopFormer): time_embed / step_embed w1.weight [D, 256] and w2.weight [D, D]
    are normal(0, 0.02 * scale), their biases "zeros"; every layers.{l}.mod.* weight
    [D, D] and bias [D] is "zeros" (true adaLN-Zero, so every block is the identity at
    init; the released code's global re-init instead draws the modulation weights from
    N(0, 0.02)). With scale != 1 all "zeros" get normal(0, 0.02 * scale), as elsewhere.
    The blocks have no attn_norm / mlp_norm tensors.

    loop (LoopUS, ARCHITECTURES.md s4.3 gate init, drawn even at scale 1):
      gate.A_log = ln(1, 2, .., D)                          ("log_arange", S4D-real A_j = -j);
      gate.up.bias b = softplus^-1(Delta0) = ln(expm1(Delta0)), Delta0 = exp(U(ln 1e-3, ln 0.1))
                       clamped >= 1e-4                      ("softplus_inv_loguniform");
      gate.up.weight ~ U(+-r^-1/2), gate.down.weight ~ U(+-D^-1/2) (the nn.Linear default),
      confidence.weight, confidence.bias ~ U(+-D^-1/2) (nn.Linear default)   ("uniform", ...);
      confidence.norm.weight "ones" (jittered like every norm gain), confidence.norm.bias "zeros".
    --scale (a test knob, chosen so the gate and q vary visibly without saturating):
      confidence.weight / .bias bounds are multiplied by scale (like every std): at scale 10
        the confidence logit is ~10x wider, so q swings between ~0 and ~1 from iteration
        to iteration and threshold 0.9 halts early for some inputs and not for others;
      gate.down.weight's bound is multiplied by sqrt(scale) and gate.up.weight's is left
        alone: delta itself already grows ~100x with the layers' scale, and scaling both
        by `scale` would push nearly every Abar to 0 or 1. With sqrt(scale) at scale 10
        about 2/3 of the Abar entries lie in (0.05, 0.95) and each channel's Abar moves
        by ~0.15 (std) across tokens and iterations;
      A_log and b get normal(0, 0.02 * scale) added when scale != 1, as every constant
        does, and the confidence LayerNorm bias is normal(0, 0.02 * scale) like the other "zeros".
    """
    rng = np.random.default_rng(seed)
    w = {}
    for name, (shape, init) in weight_shapes(spec).items():
        if init == "ones":
            a = np.ones(shape) + (rng.normal(0, norm_jitter, shape) if norm_jitter else 0)
        elif init == "zeros":
            a = rng.normal(0.0, 0.02 * scale, shape) if scale != 1.0 else np.zeros(shape)
        elif init == "identity":
            a = np.eye(shape[0], shape[1]) + (rng.normal(0.0, 0.02 * scale, shape) if scale != 1.0 else 0)
        elif isinstance(init, tuple) and init[0] == "const":
            a = np.full(shape, float(init[1])) + (rng.normal(0.0, 0.02 * scale, shape) if scale != 1.0 else 0)
        elif isinstance(init, tuple) and init[0] == "uniform":
            bound = init[1] * abs(scale) ** init[2]
            a = rng.uniform(-bound, bound, shape)
        elif isinstance(init, tuple) and init[0] == "log_arange":
            a = np.log(np.arange(1, shape[0] + 1, dtype=np.float64)) + (
                rng.normal(0.0, 0.02 * scale, shape) if scale != 1.0 else 0)
        elif isinstance(init, tuple) and init[0] == "softplus_inv_loguniform":
            lo, hi, floor = init[1:]
            d0 = np.maximum(np.exp(rng.uniform(math.log(lo), math.log(hi), shape)), floor)
            a = np.log(np.expm1(d0)) + (rng.normal(0.0, 0.02 * scale, shape) if scale != 1.0 else 0)
        else:
            a = rng.normal(0.0, init * scale, shape)
        w[name] = a.astype(np.float32)
    return w


def check_weights(spec, weights):
    for name, (shape, _) in weight_shapes(spec).items():
        if name not in weights:
            raise ValueError(f"missing tensor {name}")
        a = weights[name]
        if tuple(a.shape) != shape:
            raise ValueError(f"tensor {name} has shape {list(a.shape)}, expected {list(shape)}")
        if a.dtype != np.float32:
            raise ValueError(f"tensor {name} has dtype {a.dtype}, expected float32")


# ---------------------------------------------------------------- math

def rmsnorm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def layernorm(x, g, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)   # biased variance
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z ** 3)))


def relu2(z):
    return np.maximum(z, 0.0) ** 2


def silu(z):
    return z / (1.0 + np.exp(-z))


def rope(x, base, positions=None):
    """Rotate-half RoPE on x [T, heads, Dh]; position of row t is positions[t] (default t)."""
    T, _, Dh = x.shape
    half = Dh // 2
    p = np.arange(T, dtype=np.float64) if positions is None else np.asarray(positions, np.float64)
    f = base ** (-2.0 * np.arange(half) / Dh)          # f_i = theta^(-2i/Dh)
    ang = p[:, None, None] * f[None, None, :]           # [T, 1, half]
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def softpick(x, axis=-1, eps=1e-8):
    """ARCHITECTURES.md s5: relu(e^x - 1) / (sum |e^x - 1| + eps); -inf entries are masked.

    Uses m+ = max(max x, 0) as the reference point so nothing overflows.
    """
    m = np.maximum(np.max(x, axis=axis, keepdims=True), 0.0)
    d = np.exp(x - m) - np.exp(-m)                      # = e^{-m}(e^x - 1); masked -> -e^{-m}
    d = np.where(np.isneginf(x), 0.0, d)
    return np.maximum(d, 0.0) / (np.sum(np.abs(d), axis=axis, keepdims=True) + eps * np.exp(-m))


def attention_probs(q, k, H, K, normalizer=softmax):
    """Causal attention weights [H, T, T] for q [T, H, Dh], k [T, K, Dh]."""
    T, _, Dh = q.shape
    kh = k[:, np.arange(H) // (H // K), :]              # query head h reads kv head h // (H/K)
    scores = np.einsum("thd,shd->hts", q, kh) / np.sqrt(Dh)
    future = np.triu(np.ones((T, T), bool), k=1)        # s > t is masked
    scores = np.where(future[None], -np.inf, scores)
    return normalizer(scores, axis=-1)


# ---------------------------------------------------------------- ARCHITECTURES.md s2 / s3 primitives

def phase_rmsnorm(x, g, phases, eps):
    """PhaseAwareRMSNorm (s3.2): each of the N contiguous stripes of width D/N by its own RMS, then the gain."""
    D = x.shape[-1]
    xs = x.reshape(*x.shape[:-1], phases, D // phases)
    y = xs / np.sqrt(np.mean(xs * xs, axis=-1, keepdims=True) + eps)
    return y.reshape(x.shape) * g


def phase_rotate(x, theta, phases):
    """PhaseRotation Rot (s3.3): in stripe i, local pair (2k, 2k+1) turns by theta[k] + 2 pi i / N."""
    D = x.shape[-1]
    dp = D // phases
    assert theta.shape == (dp // 2,), theta.shape
    phi = theta[None, :] + 2.0 * np.pi * np.arange(phases)[:, None] / phases     # [N, dp/2]
    c, s = np.cos(phi), np.sin(phi)
    xs = x.reshape(*x.shape[:-1], phases, dp // 2, 2)
    a, b = xs[..., 0], xs[..., 1]
    return np.stack([a * c - b * s, a * s + b * c], axis=-1).reshape(x.shape)


def horn(positions):
    """Gabriel's-horn profile r(p) = 1 / (p + 1) for 0-based absolute positions p (s3.5)."""
    return 1.0 / (np.asarray(positions, np.float64) + 1.0)


def dc_inject(e, positions):
    """e' = e + (r(p) - mean_D(e)) 1_D (s3.5): the component along 1_D becomes r(p) 1_D."""
    return e + (horn(positions) - np.mean(e, axis=-1))[..., None]


def depth_attn_weights(sources, w, g, eps):
    """alpha [N, ...] = softmax over the source axis of <w, RMSNorm_g(S_n)> (s2.1; no scale, no bias)."""
    S = np.asarray(sources, np.float64)
    z = rmsnorm(S, g, eps) @ w                    # [N, ...]
    return softmax(z, axis=0)


def depth_attn(sources, w, g, eps):
    """DepthAttn (s2.1): sum_n alpha_n S_n with the UN-normalised sources as values."""
    S = np.asarray(sources, np.float64)
    return np.sum(depth_attn_weights(S, w, g, eps)[..., None] * S, axis=0)


def _prepare(spec, weights, tokens):
    """Check weights and tokens; (tokens as int64 [T], float64 weights W, T)."""
    check_weights(spec, weights)
    tokens = np.asarray(tokens, dtype=np.int64)
    V = spec["vocab"]
    if tokens.ndim != 1 or tokens.size == 0 or tokens.size > spec["max_seq"]:
        raise ValueError(f"need 1 <= len(tokens) <= max_seq={spec['max_seq']}, got {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= V:
        raise ValueError(f"token ids must lie in [0, {V})")
    W = {n: a.astype(np.float64) for n, a in weights.items()}
    return tokens, W, tokens.size


def _sublayer_fns(spec, W, T):
    """(norm, lin, attn, mlp): forward's pre-norm sublayer closures over float64 weights W for
    a sequence of T rows (shared by forward and idn_forward, so both run the same block)."""
    H, K = spec["heads"], spec["kv_heads"]
    Dh, eps, base = spec["d_model"] // H, spec["norm"]["eps"], spec["rope"]["base"]
    use_rope = spec["position"] == "rope"
    normalizer = {"softmax": softmax, "softpick": softpick}[spec["attention"]["normalizer"]]
    act = {"gelu": gelu_tanh, "relu2": relu2}.get(spec["mlp"]["kind"])
    tp = spec.get("three_phase")

    def norm(x, n):
        if spec["norm"]["kind"] == "layernorm":
            return layernorm(x, W[n + ".weight"], W[n + ".bias"], eps)
        if tp is not None:
            return phase_rmsnorm(x, W[n + ".weight"], tp["phases"], eps)
        return rmsnorm(x, W[n + ".weight"], eps)

    def lin(x, n):
        y = x @ W[n + ".weight"].T
        return y + W[n + ".bias"] if spec["bias"] else y

    def attn(x, p, h=None, xv=None):             # h: an already-normalised input (LoopFormer)
        h = norm(x, p + "attn_norm") if h is None else h
        hv = h if xv is None else norm(xv, p + "attn_norm")   # delta_v: V from its own routed input
        q = lin(h, p + "attn.wq").reshape(T, H, Dh)
        k = lin(h, p + "attn.wk").reshape(T, K, Dh)
        v = lin(hv, p + "attn.wv").reshape(T, K, Dh)
        if use_rope:
            q, k = rope(q, base), rope(k, base)
        P = attention_probs(q, k, H, K, normalizer)                 # [H, T, T]
        a = np.einsum("hts,shd->thd", P, v[:, np.arange(H) // (H // K), :])
        return lin(a.reshape(T, H * Dh), p + "attn.wo")

    def mlp(x, p, h=None):
        h = norm(x, p + "mlp_norm") if h is None else h
        if act is None:
            m = silu(lin(h, p + "mlp.w_gate")) * lin(h, p + "mlp.w_up")
        else:
            m = act(lin(h, p + "mlp.w_up"))
        return lin(m, p + "mlp.w_down")

    return norm, lin, attn, mlp


def forward(spec, weights, tokens, trace=None, *, cached_prefill=None, frozen_state=None, iterations=None,
            trajectory=None):
    """Logits [T, vocab] (float64) for a 1-D sequence of token ids.

    trace["final_hidden"] (every model, whenever trace is given): the post-final-norm hidden
    state [T, D] (float64), the input of the LM head (logits = final_hidden @ head^T).

    trajectory (loopformer only): a list of step sizes used instead of loop.trajectory for
    this call (any length >= 1, each > 0, summing to 1 within 1e-6; check_trajectory); the
    number of shared-stack passes is its length. None is the spec's trajectory, bit for bit.
    Shortcut-consistency training (loop.shortcut, train.py loss) runs [1/M] * M and a short one.

    cached_prefill (loopus only; use cached_forward): None is the whole-window forward
    (the LAST row's halt decision stops every row). An integer P in [0, T] gives the
    KV-cache semantics of `cached-forward --prefill P` (s4.3, see cached_forward): all N
    core passes run on every row without halting; rows < P keep h_{K_P} with K_P decided
    on row P-1, each row t >= P keeps h_{K_t}[t] decided on its own row; the coda runs
    causally over the kept states. The trace then holds "h" (h_0 .. h_N, all rows), "u",
    "dt", "abar" (all N passes), "q_rows" ([N][T]: q_k of every row), "change" ([N][T]:
    ||h_{k+1}[j] - h_k[j]||), "kept" (per row: its kept pass count, 1 .. N), "deciders"
    ({row: (K, [(statistic, threshold) per pass up to K])} for the rows that made a
    decision: P-1 and every t >= P), "x" (the kept states X) and "iterations" (N).

    trace: optional dict; filled with "h0" (the stream's initial value after
    positions / horn), "x" (list of the 2L sublayer inputs x_s, before PreNorm)
    and "o" (list of the raw sublayer outputs o_s), for tests. With attn_res also
    "n_src" (the number of sources each of the 2L sites really saw) and
    "n_src_final" (the final site's count, None without one); without attn_res and with
    delta or delta_block also "h" (the stream h_0 .. h_2L after each sublayer's residual
    add and any phase rotation; block l's output is h[2l + 2]). With
    parcae loop it is filled instead with "e" (prelude output after PreludeNorm), "inj"
    (Bbar e), "h" (the states h_0 .. h_n) and "y" (coda_proj h_n); with loopformer
    with "c" (the conditioning vectors c_1 .. c_M) and "iterations" (M); with loopus
    with "iterations" (K, the core passes actually run, 1 .. N), "halted" (whether the
    halt rule fired; False when all N ran without it), "h" (h_0 .. h_K, all rows), "u",
    "dt", "abar" (per pass k: R(h_k), Dt, Abar), "q" (q_0 .. q_{K-1}, floats, last row)
    and "stat" (per pass the (statistic, threshold) pair the halt rule compared:
    q_k, the cdf, or ||h_{k+1}[n-1] - h_k[n-1]||; (q_k, None) for mode none).

    iterations (parcae only): run n = iterations core passes instead of loop.iterations (a
    training draw, see loop.sample_max; parcae_iterations validates it: >= 1, and <= sample_max
    when the spec has one). The result equals the forward of the same spec with `iterations: n`.
    None (the default) is loop.iterations, as at evaluation and inference.

    frozen_state (parcae only): an array [T, D] used as h_{n-k}, the state entering iteration
    n-k (n the core passes this call runs, k = parcae_backprop(spec, n) = min(n, backprop)),
    instead of the computed one; only the last k iterations run from it. Equal to
    trace["h"][n - k] of a plain forward with the same iterations, it gives the same logits;
    finite differences with it held at its unperturbed value are the truncated-backprop
    gradient. With it the trace's "h" lists only h_{n-k} .. h_n.

    attn_res block (s2.2 Kimi Block AttnRes, replacement), in the s2.2 code order:
    blocks = [], partial = h0; per layer l: x_attn = DepthAttn(blocks ++ [partial]);
    if l % S_b == 0: blocks.append(partial), partial = 0; partial += Attn(..);
    x_mlp = DepthAttn(blocks ++ [partial]); partial += MLP(..). Final:
    DepthAttn(blocks ++ [partial]). Routing always happens after the reset has been
    followed by an addition, so the zero partial is never itself a source: layer 0's
    attention sees [h0] (one source: x = h0) and its MLP [h0, attn output].

    attn_res delta_block (s2.4, the clean definition): the ordinary stream h is kept;
    sources = [h_0, Delta_0 .. Delta_{n-1}] over the COMPLETED blocks only, Delta_b =
    h(end of block b) - h(start of block b) taken from the stream values as they are
    (with three_phase: after the rotation, so Delta_b is then not the plain sum of the
    block's sublayer outputs; the sources still telescope, h_0 + sum Delta_b = h at the
    current block start). A block's Delta is visible from the next sublayer on, i.e.
    from the attention of the next block's first layer. x_s = h_s + DepthAttn(sources)
    when there are >= 2 sources, else x_s = h_s. No final site.

    attn_res delta / delta_block optional pieces (s2.3; they never create or remove a site:
    sites are where attn_res_sites puts them, n_src counts the real sources, not the null):
    null_source prepends the site's own {site}.null (broadcast over tokens) as source 0;
    gate makes x_s = h_s + g (.) DepthAttn_s(..) with g = sigmoid({site}.gate) (one scalar),
    sigmoid(h_s {site}.gate.weight^T + {site}.gate.bias) (per token and channel) or
    {site}.alpha, and g = 1 for gate none; delta_v adds, at every attention site, a second site
    layers.{l}.attn_res.attn_v over the same sources (its own query / norm / null / gate)
    whose x_v = h_s + g_v (.) DepthAttn_v(..) feeds only the value projection,
    V = W_v AttnNorm(x_v), while Q and K use AttnNorm(x_s). The trace then also holds "x_v"
    (per sublayer: x_v at attention sites that have one, else None).

    Routing weights (every attn_res kind; for attn_res.entropy_bonus, see train.py loss): the
    trace's "routing_alpha" lists, in evaluation order, the softmax weights alpha (float64
    [N_candidates, T]; N_candidates counts the null source where there is one, as row 0) of
    every routing site evaluated: exactly the sites that own parameters, i.e. for each
    sublayer s its attn_res_sites entry, then (delta_v) its attn_res_v_sites entry, and
    last the final site (attn_res_has_final). Sites with a single source and no routing are
    not listed. Without attn_res the list is empty (loop models, which refuse attn_res,
    do not fill it). Recording changes no result (the same operations as depth_attn).
    """
    if iterations is not None:
        iterations = parcae_iterations(spec, iterations)         # ValueError unless parcae and in range
    if trajectory is not None:
        if not is_loopformer(spec):
            raise ValueError("forward: trajectory is only for loopformer loops")
        trajectory = check_trajectory(trajectory, "forward: trajectory")
    tokens, W, T = _prepare(spec, weights, tokens)
    L, eps = spec["layers"], spec["norm"]["eps"]
    use_rope = spec["position"] == "rope"
    tp, ar = spec.get("three_phase"), spec.get("attn_res")
    routing = ar["kind"] if ar else None

    norm, lin, attn, mlp = _sublayer_fns(spec, W, T)
    head = W["embed.weight"] if spec["tie_embeddings"] else W["lm_head.weight"]

    def lm_head(z):                              # final norm -> head (no bias); keeps final_hidden
        xf = norm(z, "norm")
        if trace is not None:
            trace["final_hidden"] = xf
        return xf @ head.T

    alphas = []                                  # trace["routing_alpha"], in evaluation order

    def route(sources, n):                       # depth_attn, keeping alpha
        S = np.asarray(sources, np.float64)
        a = depth_attn_weights(S, W[n + ".query"], W[n + ".norm"], ar["eps"])
        if trace is not None:
            alphas.append(a)
        return np.sum(a[..., None] * S, axis=0)

    x = W["embed.weight"][tokens]
    if not use_rope:
        x = x + W["pos_embed.weight"][:T]
    if tp is not None and tp["horn"]:
        x = dc_inject(x, np.arange(T))           # absolute positions 0 .. T-1 (no cache offset here)
    if is_loopformer(spec):
        # LoopFormer, ARCHITECTURES.md s4.2 (make_spec excludes taper, attn_res, three_phase,
        # layernorm). The shared stack runs M times on the whole sequence, so each (iteration,
        # layer) attention uses that iteration's own K/V. No re-injection.
        def embedder(sc, n):                                         # E(s) = W2 SiLU(W1 phi(s) + b1) + b2
            z = W[n + ".w1.weight"] @ loopformer_phi(sc) + W[n + ".w1.bias"]
            return W[n + ".w2.weight"] @ silu(z) + W[n + ".w2.bias"]

        def plain_rms(z):                                            # RMSNorm without affine
            return z / np.sqrt(np.mean(z * z, axis=-1, keepdims=True) + eps)

        cs = []
        for t_prev, d in loopformer_schedule(spec, trajectory):
            c = embedder(t_prev, "time_embed") + embedder(d, "step_embed")   # c_m = TE(t_{m-1}) + DE(d_m)
            sc = silu(c)
            cs.append(c)
            for l in range(L):
                p = f"layers.{l}."
                g_a, g_m, s_a, s_m = (W[p + f"mod.{k}.weight"] @ sc + W[p + f"mod.{k}.bias"] for k in LOOPFORMER_MODS)
                x = x + g_a * attn(x, p, plain_rms(x) * (1.0 + s_a))
                x = x + g_m * mlp(x, p, plain_rms(x) * (1.0 + s_m))
        if trace is not None:
            trace.update(c=cs, iterations=len(cs))
        return lm_head(x)
    if frozen_state is not None and parcae_backprop(spec) is None:
        raise ValueError("forward: frozen_state is only for parcae loops")
    if cached_prefill is not None and not is_loopus(spec):
        raise ValueError("forward: cached_prefill is only for loopus (use cached_forward)")
    if spec.get("loop") is not None:
        # Parcae, ARCHITECTURES.md s4.1 (make_spec excludes attn_res and three_phase here).
        # Each core block in iteration t is applied to the whole sequence, so its attention
        # uses that iteration's own K/V (the compiler's cache keyed by (iteration, layer)).
        def block(z, l):
            p = f"layers.{l}."
            z = z + attn(z, p)
            return z + mlp(z, p)

        prelude, core, coda = loop_parts(spec)
        for l in prelude:
            x = block(x, l)
        if is_loopus(spec):
            # LoopUS, ARCHITECTURES.md s4.3 (noise sigma = 0). h_0 = E(x) (no norm); each pass
            # runs R on the whole sequence (its own K/V per iteration), gates against h_k, and
            # the LAST row's confidence / change decides whether the whole sequence stops.
            lp = spec["loop"]
            halt = lp["halt"]
            if cached_prefill is not None:
                x = _loopus_cached_states(spec, W, x, core, block, cached_prefill, trace)
                for l in coda:
                    x = block(x, l)
                return lm_head(x)
            h = x
            hs, us, dts, abars, qs, stats = [h], [], [], [], [], []
            halted = False
            for _ in range(lp["iterations"]):
                u = h
                for l in core:
                    u = block(u, l)                                  # u = R(h_k)
                delta = u - h
                dt, abar = loopus_gate(delta, W["gate.down.weight"], W["gate.up.weight"], W["gate.up.bias"],
                                       W["gate.A_log"])
                h_new = loopus_mix(u, h, abar)
                qs.append(loopus_confidence(delta[-1], W["confidence.norm.weight"], W["confidence.norm.bias"],
                                            W["confidence.weight"], W["confidence.bias"]))
                stat, thr, stop = loopus_halt_statistic(halt, qs, h_new[-1], h[-1])
                h = h_new
                hs.append(h)
                us.append(u)
                dts.append(dt)
                abars.append(abar)
                stats.append((stat, thr))
                if stop:
                    halted = True
                    break
            x = h
            for l in coda:
                x = block(x, l)
            if trace is not None:
                trace.update(h=hs, u=us, dt=dts, abar=abars, q=qs, stat=stats, iterations=len(us), halted=halted)
            return lm_head(x)
        e = norm(x, "prelude_norm")                                  # e = PreludeNorm(Prelude(x))
        delta, abar = parcae_discretize(W["injection.A_log"], W["injection.dt_bias"])
        inj = delta * (e @ W["injection.B"].T)                       # Bbar e = diag(Delta) B e
        h = np.zeros_like(e)                                         # h_0 = 0: the "zero" state init
        n_iter = parcae_iterations(spec, iterations)                # n: loop.iterations or the given draw
        if frozen_state is not None:                                 # truncated backprop: h_{n-k} given
            h = np.asarray(frozen_state, np.float64)
            if h.shape != e.shape:
                raise ValueError(f"forward: frozen_state has shape {list(h.shape)}, expected {list(e.shape)}")
            n_iter = parcae_backprop(spec, n_iter)                   # k = min(n, backprop)
        hs = [h]
        for _ in range(n_iter):
            u = abar * h + inj                                       # u_t = Abar h_t + Bbar e
            for l in core:
                u = block(u, l)
            h = u                                                    # h_{t+1} = R(u_t)
            hs.append(h)
        x = y = h @ W["coda_proj.weight"].T                          # y = C_proj h_n (no bias)
        for l in coda:
            x = block(x, l)
        if trace is not None:
            trace.update(e=e, inj=inj, h=hs, y=y, iterations=len(hs) - 1)
        return lm_head(x)
    def route_or_only(sources, n):               # DepthAttn of a single source is that source
        return sources[0] if len(sources) == 1 else route(sources, n)

    null_source = bool(ar and ar.get("null_source", False))
    gate = ar.get("gate", "none") if ar else "none"
    delta_v = bool(ar and ar.get("delta_v", False))

    def additive(h, sources, n):
        """h_s + g (.) DepthAttn_n([null_n] ++ sources), s2.3 with its optional pieces (site n)."""
        if null_source:                          # source 0, the same vector at every token
            sources = [np.broadcast_to(W[n + ".null"], h.shape)] + list(sources)
        r = route(sources, n)
        if gate == "none":
            return h + r
        if gate == "sigmoid_scalar":
            g = sigmoid(W[n + ".gate"])                                   # [1]: one scalar
        elif gate == "sigmoid_vector":
            g = sigmoid(h @ W[n + ".gate.weight"].T + W[n + ".gate.bias"])   # [T, D]
        else:                                    # learnable_alpha
            g = W[n + ".alpha"]                                           # [1]
        return h + g * r

    h0, outs, xs, n_src, n_final, hs, xvs = x, [], [], [], None, [x], []
    if routing in ATTN_RES_BLOCK_KINDS:
        S_b = attn_res_block_size(spec)
    blocks, partial = [], h0                     # block: completed block representations, running sum
    deltas, block_start = [], h0                 # delta_block: Delta_0 .. of completed blocks, h at block start
    for s in range(2 * L):
        l, is_mlp = divmod(s, 2)
        p = f"layers.{l}."
        site = p + ("attn_res.mlp" if is_mlp else "attn_res.attn")
        xv = None                                # delta_v: the value projection's routed input
        if routing in ("delta", "full"):
            n_src.append(s + 1)
        if routing is None or (routing in ("delta", "full") and s == 0):
            xin = x                              # delta: no routing at s = 0; full: x_0 = v_0 = x
        elif routing == "delta":
            xin = additive(x, [h0] + outs, site)   # x_s = h_s + g DepthAttn_s([null,] h_0, o_0 .. o_{s-1})
            if delta_v and not is_mlp:
                xv = additive(x, [h0] + outs, p + "attn_res.attn_v")
        elif routing == "full":
            xin = route([h0] + outs, site)       # x_s = DepthAttn_s([v_0, o_0 .. o_{s-1}])
        elif routing == "block":
            src = blocks + [partial]             # attention: before the close; MLP: after it
            n_src.append(len(src))
            xin = route_or_only(src, site)
            if not is_mlp and l % S_b == 0:
                blocks.append(partial)           # at l = 0 this stores the embedding as b_0
                partial = np.zeros_like(h0)
        else:                                    # delta_block
            src = [h0] + deltas
            n_src.append(len(src))
            xin = additive(x, src, site) if len(src) >= 2 else x
            if delta_v and not is_mlp and len(src) >= 2:
                xv = additive(x, src, p + "attn_res.attn_v")
        o = mlp(xin, p) if is_mlp else attn(xin, p, xv=xv)
        xs.append(xin)
        xvs.append(xv)
        outs.append(o)
        if routing == "block":
            partial = partial + o
        elif routing != "full":
            x = x + o                            # h_{s+1} = h_s + o_s
            if tp is not None and not is_mlp:
                x = phase_rotate(x, W[p + "rotation.theta"], tp["phases"])   # replaces h (s3.3)
            hs.append(x)
            if routing == "delta_block" and is_mlp and (l + 1) % S_b == 0:
                deltas.append(x - block_start)   # block (l+1)/S_b - 1 is complete; visible from s + 1
                block_start = x
    if routing == "full":
        n_final = 2 * L + 1
        x = route([h0] + outs, "attn_res_final")
    elif routing == "block":
        n_final = len(blocks) + 1
        x = route_or_only(blocks + [partial], "attn_res_final")
    if trace is not None:
        trace.update(h0=h0, x=xs, o=outs)
        if routing is not None:
            trace.update(n_src=n_src, n_src_final=n_final)
        trace.update(routing_alpha=alphas)
        if routing in (None, "delta", "delta_block"):
            trace.update(h=hs)
            if delta_v:
                trace.update(x_v=xvs)
    return lm_head(x)                                 # the LM head has no bias


def _check_layer_parallel(spec, iterations):
    """ValueError unless spec is the standard pre-norm decoder and iterations an integer >= 1."""
    for key, what in (("three_phase", "three_phase's phase rotation replaces the stream between attention and MLP"),
                      ("attn_res", "attn_res routes each sublayer's input from earlier sources instead of "
                                   "the previous block's output"),
                      ("loop", "a loop spec re-applies shared blocks with injection / gating / modulation")):
        if spec.get(key) is not None:
            raise ValueError(f"--layer-parallel (SNLP IDN, ARCHITECTURES.md s4.4) supports only the standard "
                             f"decoder, not {key}: {what}, so its blocks are not of the pre-norm residual form "
                             f"F(h) = h + g(h)")
    if isinstance(iterations, bool) or not _is_int(iterations):
        raise ValueError(f"--layer-parallel: the iteration count K must be an integer >= 1, got {iterations!r}")
    if iterations < 1:
        raise ValueError(f"--layer-parallel: the iteration count K must be >= 1, got {iterations}")


def idn_forward(spec, weights, tokens, iterations, trace=None):
    """Logits [T, vocab] (float64) of the SNLP Identity-Newton layer-parallel update
    (ARCHITECTURES.md s4.4), lathe's `--layer-parallel K` execution of the standard decoder.

    Block l (1-based here, layers.{l-1} in the weights) is F_l(h) = h + g_l(h), with
    g_l(h) = a + MLP(h + a), a = Attn(h): the block's whole branch (both sublayers with
    their residual adds, minus h). h_0 is the stream entering block 0 (token embedding,
    plus learned positions). The trace guess starts at h_l^(0) = h_0 for l = 1..L; one
    iteration evaluates every block's branch on the previous trace and takes a prefix
    sum over depth:
        h_l^(k+1) = h_0 + sum_{j=1..l} g_j(h_{j-1}^(k)),   l = 1..L.
    After K = `iterations` iterations the logits are head(final_norm(h_L^(K))). After k
    iterations h_1..h_k equal the sequential forward (up to rounding); K >= L gives the
    sequential result, and more iterations change nothing. Each branch is causal, so the
    whole update is causal.

    Only the standard decoder (any norm / mlp / attention / position / bias / tie options
    and mlp.taper): three_phase, attn_res and loop specs raise ValueError, as does an
    iteration count that is not an integer >= 1.

    trace: optional dict; filled with "h0" ([T, D]), "H" (K + 1 arrays [L + 1, T, D]:
    H[k][l] = h_l^(k), H[k][0] = h_0, H[0] the initial guess), "g" (K arrays [L, T, D]:
    g[k][j - 1] = g_j(h_{j-1}^(k)), the branches iteration k + 1 summed) and
    "iterations" (K).
    """
    _check_layer_parallel(spec, iterations)
    tokens, W, T = _prepare(spec, weights, tokens)
    L = spec["layers"]
    norm, _, attn, mlp = _sublayer_fns(spec, W, T)

    def branch(h, l):                                 # g_l(h) = F_l(h) - h, layers.{l-1}
        p = f"layers.{l - 1}."
        a = attn(h, p)
        return a + mlp(h + a, p)

    h0 = W["embed.weight"][tokens]
    if spec["position"] != "rope":
        h0 = h0 + W["pos_embed.weight"][:T]
    Hk = np.broadcast_to(h0, (L + 1,) + h0.shape).copy()          # H^(0): h_l = h_0 for every l
    Hs, gs = [Hk], []
    for _ in range(int(iterations)):
        g = np.stack([branch(Hk[l - 1], l) for l in range(1, L + 1)])  # all L branches on H^(k)
        Hk = np.concatenate([h0[None], h0[None] + np.cumsum(g, axis=0)], axis=0)   # prefix sum over depth
        Hs.append(Hk)
        gs.append(g)
    if trace is not None:
        trace.update(h0=h0, H=Hs, g=gs, iterations=int(iterations))
    head = W["embed.weight"] if spec["tie_embeddings"] else W["lm_head.weight"]
    xf = norm(Hk[L], "norm")
    if trace is not None:
        trace["final_hidden"] = xf
    return xf @ head.T


def loopus_halt_iterations(halt, qs, changes):
    """(K, [(statistic, threshold) per pass 1 .. K]) for ONE row, from its statistics over
    all N passes: qs[k] = q_k of that row, changes[k] = ||h_{k+1} - h_k|| at that row.
    K is the first pass count k + 1 at which the mode's rule (loopus_halt_statistic) holds,
    N if it never does (always for mode none)."""
    stats = []
    for k in range(len(qs)):
        stat, thr, stop = _halt_rule(halt, qs[:k + 1], changes[k])
        stats.append((stat, thr))
        if stop:
            return k + 1, stats
    return len(qs), stats


def _halt_rule(halt, qs, change):
    """loopus_halt_statistic with the change norm given directly (convergence)."""
    if halt["mode"] == "convergence":
        return change, halt["tolerance"], change < halt["tolerance"]
    return loopus_halt_statistic(halt, qs, None, None)


def _loopus_cached_states(spec, W, h0, core, block, P, trace):
    """The kept states X [T, D] of `cached-forward --prefill P` for a LoopUS model (s4.3).

    Every row runs all N passes (no freezing: with a cache all samples keep stepping, so
    the core's per-iteration K/V of every position come from the un-frozen h_k; causal,
    so one pass over all rows gives each position what it saw when it was processed).
    Row P-1 decides the prefill's pass count K_P (kept by rows 0..P-1); every decoded row
    t >= P decides its own K_t."""
    lp = spec["loop"]
    halt, N = lp["halt"], lp["iterations"]
    T = h0.shape[0]
    if isinstance(P, bool) or not _is_int(P) or not 0 <= P <= T:
        raise ValueError(f"--cached {P!r}: the prefill length must be an integer in [0, {T}] (the token count)")
    h = h0
    hs, us, dts, abars, q_rows, changes = [h], [], [], [], [], []
    for _ in range(N):
        u = h
        for l in core:
            u = block(u, l)                                          # u = R(h_k), all rows
        delta = u - h
        dt, abar = loopus_gate(delta, W["gate.down.weight"], W["gate.up.weight"], W["gate.up.bias"],
                               W["gate.A_log"])
        h_new = loopus_mix(u, h, abar)
        q_rows.append([loopus_confidence(delta[j], W["confidence.norm.weight"], W["confidence.norm.bias"],
                                         W["confidence.weight"], W["confidence.bias"]) for j in range(T)])
        changes.append([float(np.linalg.norm(h_new[j] - h[j])) for j in range(T)])
        h = h_new
        hs.append(h)
        us.append(u)
        dts.append(dt)
        abars.append(abar)
    deciders = {}
    for j in ([P - 1] if P else []) + list(range(P, T)):
        deciders[j] = loopus_halt_iterations(halt, [q[j] for q in q_rows], [c[j] for c in changes])
    kept = [deciders[P - 1][0] if j < P else deciders[j][0] for j in range(T)]
    x = np.stack([hs[kept[j]][j] for j in range(T)])
    if trace is not None:
        trace.update(h=hs, u=us, dt=dts, abar=abars, q_rows=q_rows, change=changes, kept=kept,
                     deciders=deciders, x=x, iterations=N)
    return x


def cached_forward(spec, weights, tokens, prefill, trace=None):
    """The logits lathe's `cached-forward --prefill P` must produce, [n, vocab] float64.

    A prefill over tokens[:P] as one block, then tokens P .. n-1 decoded one at a time
    against a KV cache. 0 <= P <= n.

    Causal models (standard, attn_res, three_phase, parcae, loopformer): rows 0..P-1 are
    computed as one forward over tokens[:P] and each later row t as the last row of a
    forward over tokens[:t+1]; for a causal model both equal forward(tokens).

    LoopUS (s4.3, "with a cache, all samples keep stepping and the first-halt state is
    kept"): E and the core are unaffected by halting; every position runs all N core
    passes, and the core's K/V cache at iteration k holds keys / values from the
    un-frozen iterates h_k of every position (as in a forward with halt mode none). The
    prefill's decision is made on its last row P-1 (first k whose rule holds on q_k[P-1],
    the cdf of q_0..q_k[P-1], or ||h_{k+1}[P-1] - h_k[P-1]||; N if none): K_P, and EVERY
    prefill row keeps X[j] = h_{K_P}[j]. A decoded token t keeps X[t] = h_{K_t}[t] with
    K_t from its own row. Dec, the final norm and the head then run causally over X:
    row t = head(norm(Dec(X[0..t])))[t]. Rows 0..P-1 equal forward(tokens[:P]) (the
    whole prefill keeps K_P); a decoded row t is in general NOT forward(tokens[:t+1])[-1],
    since Dec attends over the earlier rows' kept states, not over h_{K_t} of them.
    trace (optional dict, loopus only) receives forward's cached trace ("kept", ...).
    """
    tokens = [int(t) for t in np.asarray(tokens, np.int64).reshape(-1)]
    P, n = prefill, len(tokens)
    if isinstance(P, bool) or not _is_int(P) or not 0 <= P <= n:
        raise ValueError(f"--cached {P!r}: the prefill length must be an integer in [0, {n}] (the token count)")
    if is_loopus(spec):
        return forward(spec, weights, tokens, trace, cached_prefill=P)
    rows = [forward(spec, weights, tokens[:P])] if P else []
    rows += [forward(spec, weights, tokens[:t + 1])[-1:] for t in range(P, n)]
    return np.concatenate(rows, axis=0)


def cached_iterations(spec, weights, tokens, prefill, trace=None):
    """The kept core pass count of each row under cached_forward(spec, weights, tokens,
    prefill): loopus rows < P all K_P (decided on row P-1), row t >= P its own K_t;
    parcae / loopformer `iterations` for every row. Raises ValueError without a loop.
    trace (optional dict) receives the loopus cached trace."""
    if spec.get("loop") is None:
        raise ValueError("--print-cached-iterations needs a spec with a loop key (parcae, loopformer or loopus)")
    n = len(np.asarray(tokens).reshape(-1))
    if not is_loopus(spec):
        cached_forward(spec, weights, tokens, prefill)                 # validates tokens and P
        return [spec["loop"]["iterations"]] * n
    tr = {} if trace is None else trace
    cached_forward(spec, weights, tokens, prefill, trace=tr)
    return list(tr["kept"])


def iterations_used(spec, weights, tokens, trace=None):
    """The number of core passes forward(spec, weights, tokens) runs: loopus 1 .. N (the
    last token decides, s4.3); parcae / loopformer always `iterations`. Raises ValueError
    without a loop. trace (optional dict) receives forward's trace."""
    if spec.get("loop") is None:
        raise ValueError("--print-iterations needs a spec with a loop key (parcae, loopformer or loopus)")
    tr = {} if trace is None else trace
    forward(spec, weights, tokens, trace=tr)
    return tr["iterations"]


def halt_margin_warnings(trace, rel=1e-3):
    """Lines naming every loopus halt decision within rel (relative to max(1, |threshold|))
    of its threshold, where float32 rounding in lathe could decide the other way.
    trace: forward's ("stat") or a cached trace ("deciders": one set of lines per deciding row)."""
    if "deciders" in trace:
        return [line.replace("WARNING loopus", f"WARNING loopus row {j}", 1)
                for j, (_, stats) in sorted(trace["deciders"].items())
                for line in halt_margin_warnings({"stat": stats}, rel)]
    out = []
    for k, (stat, thr) in enumerate(trace.get("stat", [])):
        if thr is not None and abs(stat - thr) <= rel * max(1.0, abs(thr)):
            out.append(f"WARNING loopus halt statistic at iteration {k + 1} is {stat:.9g}, within {rel:g} of "
                       f"its threshold {thr:g}: lathe's float32 may decide differently")
    return out


# ---------------------------------------------------------------- CLI

def compare(lathe, ref, rtol):
    """Return (ok, message) for lathe logits against the reference."""
    if lathe.shape != ref.shape:
        return False, f"MISMATCH shape lathe={list(lathe.shape)} ref={list(ref.shape)}"
    lathe = lathe.astype(np.float64)
    if not np.all(np.isfinite(lathe)):
        return False, "MISMATCH lathe logits contain non-finite values"
    err = float(np.max(np.abs(lathe - ref)))
    mref = float(np.max(np.abs(ref)))
    rel = err / mref if mref else float("inf") if err else 0.0
    line = f"max_abs_err={err:.3e} max_abs_ref={mref:.3e} rel={rel:.3e}"
    if err <= rtol * mref:
        return True, line + " OK"
    i = np.unravel_index(np.argmax(np.abs(lathe - ref)), ref.shape)
    return False, f"MISMATCH {line} rtol={rtol:g} worst at [t={i[0]}, v={i[1]}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--weights", help="safetensors file to read")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--compare", help=".npy of lathe's logits [n, vocab]")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--out", help="write the reference logits (float64) to this .npy")
    ap.add_argument("--write-weights", metavar="OUT", help="write random weights and exit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every init std")
    ap.add_argument("--norm-jitter", type=float, default=0.0, help="norm gains 1 + N(0, J)")
    ap.add_argument("--print-widths", action="store_true",
                    help="print the per-layer MLP widths as widths=w0,w1,... and exit (exit 1 on a bad spec)")
    ap.add_argument("--cached", type=int, metavar="P",
                    help="--compare / --out against lathe's cached-forward --prefill P (a prefill over "
                         "tokens[:P], then one token at a time with a KV cache); equals the plain forward "
                         "except for loopus, whose rows keep the state of their own halt decision (the "
                         "prefill's made on row P-1)")
    ap.add_argument("--print-iterations", action="store_true",
                    help="print 'iterations: K', the core passes the whole-window forward runs for the given "
                         "tokens (loop specs only)")
    ap.add_argument("--print-cached-iterations", type=int, metavar="P",
                    help="print 'iterations: K_0 K_1 ...', the kept core pass count of each row under "
                         "--cached P (rows < P all K_P; loop specs only)")
    ap.add_argument("--layer-parallel", type=int, metavar="K",
                    help="--compare / --out against lathe's --layer-parallel K: the SNLP Identity-Newton "
                         "layer-parallel update (ARCHITECTURES.md s4.4) with K >= 1 iterations (idn_forward; "
                         "standard decoder only, K >= layers gives the sequential forward)")
    args = ap.parse_args(argv)

    if args.print_widths:
        try:
            widths = mlp_widths(load_spec(args.spec))
        except ValueError as e:
            print(f"ERROR {e}")
            return 1
        print("widths=" + ",".join(str(w) for w in widths))
        return 0
    spec = load_spec(args.spec)
    if args.write_weights:
        w = init_weights(spec, args.seed, args.scale, args.norm_jitter)
        safetensors_np.save(args.write_weights, w, {"format": "pt", "spec": spec["name"]})
        print(f"wrote {len(w)} tensors to {args.write_weights}")
        return 0
    if not (args.weights and args.tokens):
        ap.error("--weights and --tokens are required unless --write-weights is given")
    weights, _ = safetensors_np.load(args.weights)
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    try:
        if args.print_iterations:
            tr = {}
            print(f"iterations: {iterations_used(spec, weights, tokens, tr)}")
            for line in halt_margin_warnings(tr):
                print(line, file=sys.stderr)
            if not (args.out or args.compare or args.print_cached_iterations is not None):
                return 0
        if args.print_cached_iterations is not None:
            tr = {}
            Ks = cached_iterations(spec, weights, tokens, args.print_cached_iterations, tr)
            print("iterations: " + " ".join(str(k) for k in Ks))
            for line in halt_margin_warnings(tr):
                print(line, file=sys.stderr)
            if not (args.out or args.compare):
                return 0
        if args.layer_parallel is not None:
            if args.cached is not None:
                raise ValueError("--layer-parallel cannot be combined with --cached: a KV-cached decode under "
                                 "the layer-parallel update is not defined")
            ref = idn_forward(spec, weights, tokens, args.layer_parallel)
        elif args.cached is not None:
            ref = cached_forward(spec, weights, tokens, args.cached)
        else:
            ref = forward(spec, weights, tokens)
    except ValueError as e:
        print(f"ERROR {e}")
        return 2
    if args.out:
        np.save(args.out, ref)
    if args.compare:
        ok, line = compare(np.load(args.compare), ref, args.rtol)
        print(line)
        return 0 if ok else 1
    if not args.out:
        print(f"logits shape={list(ref.shape)} max_abs={np.max(np.abs(ref)):.6e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
