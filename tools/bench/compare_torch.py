#!/usr/bin/python3
"""lathe against PyTorch eager and OpenBLAS, on one machine, in one run.

Run it exactly like this (OpenBLAS reads these variables when numpy/torch are
imported, so they must be unset before Python starts; the script refuses to
run if either is set):

  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 \\
      tools/bench/compare_torch.py [--spec examples/bench-base.yaml] [--bin build/bin]

It
  1. compiles the spec with lathec and writes weights with `lathe-run init`;
  2. builds the same model in PyTorch eager (float32), written from
     docs/model-and-weights.md, with those safetensors weights, and checks
     that its logits agree with lathe's (`lathe-run forward` and
     `lathe-run cached-forward`, relative max error <= --rtol), and with the
     float64 numpy reference (test/reference/decoder.py);
  3. runs `lathe-run ART bench --profile` (prefill of --prompt-len tokens,
     greedy decode of --decode tokens, medians of --repeat runs) and times
     torch on the same prompt the same way (2 threads, torch.no_grad, KV
     cache, medians);
  4. times OpenBLAS sgemm (numpy float32 matmul, 2 threads) at the model's
     GEMM shapes and compares with the GEMMs lathe's kernels ran, as the
     runtime timed them (bench's gemm_profile);
  5. prints ONE JSON object with lathe's and torch's numbers, the ratios, the
     logits check and the exact commands it ran.

Exit status: 0 when everything ran and the logits agree (missed speed goals
do not fail it), 1 on an error or a logits mismatch.
"""
import argparse
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
CANONICAL = ("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "
             "tools/bench/compare_torch.py")
# The prompt `lathe-run bench` uses (tools/lathe-run/lathe-run.cpp, kText):
# bytes of this text, cycled, modulo the vocabulary.
BENCH_TEXT = (b"It was the best of times, it was the worst of times, it was the age "
              b"of wisdom, it was the age of foolishness, it was the epoch of belief, "
              b"it was the epoch of incredulity, it was the season of Light, it was "
              b"the season of Darkness.\n")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=os.path.join(REPO, "examples", "bench-base.yaml"))
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bin"),
                    help="directory with lathec and lathe-run")
    ap.add_argument("--workdir", default=None,
                    help="where the artifact, weights and outputs go (default: a temp dir)")
    ap.add_argument("--artifact", help="use this artifact instead of compiling --spec")
    ap.add_argument("--weights", help="use these weights instead of `lathe-run init`")
    ap.add_argument("--seed", type=int, default=0, help="lathe-run init --seed")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bandwidth-mib", type=int, default=1024,
                    help="lathe-run bench --bandwidth-mib")
    ap.add_argument("--check-tokens", type=int, default=24,
                    help="prompt length of the logits check")
    ap.add_argument("--rtol", type=float, default=1e-3,
                    help="max |lathe - torch| / max |torch| allowed")
    ap.add_argument("--no-forward-check", action="store_true",
                    help="skip `lathe-run forward` (it pads to max_seq)")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the float64 numpy reference check of the torch model")
    ap.add_argument("--gemm-repeat", type=int, default=5)
    ap.add_argument("--gemm-m", type=int, default=None,
                    help="M of the GEMM shapes (default: --prompt-len)")
    return ap.parse_args(argv)


def refuse_openblas_env():
    bad = [v for v in OPENBLAS_VARS if v in os.environ]
    if bad:
        sys.stderr.write(
            "compare_torch.py: refusing to run with %s set: OpenBLAS reads it when "
            "numpy/torch load, so it must be unset before Python starts.\n"
            "Run: %s ...\n" % (" and ".join(bad), CANONICAL))
        sys.exit(1)


ARGS = parse_args(sys.argv[1:])
refuse_openblas_env()
# Thread counts are read when the libraries load, so set them first; the
# lathe-run subprocesses inherit them (lathe's GEMMs call OpenBLAS too).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import ctypes  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "test", "reference"))
import decoder as reference  # noqa: E402
import safetensors_np  # noqa: E402


def log(msg):
    sys.stderr.write("compare_torch: %s\n" % msg)
    sys.stderr.flush()


class Failure(Exception):
    pass


COMMANDS = {}


def run(name, cmd, capture=False):
    COMMANDS[name] = " ".join(shlex.quote(str(c)) for c in cmd)
    log("running: " + COMMANDS[name])
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise Failure("%s failed (exit %d): %s\n%s" % (name, proc.returncode, COMMANDS[name],
                                                       proc.stderr.decode(errors="replace")[-2000:]))
    return (proc.stdout.decode() if capture else None), time.monotonic() - start


def median(xs):
    return float(np.median(np.asarray(xs, dtype=np.float64))) if xs else None


# ---------------------------------------------------------------- the model in torch


class TorchDecoder:
    """The standard decoder of docs/model-and-weights.md, every option, float32."""

    def __init__(self, spec, weights):
        self.spec = spec
        self.W = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in weights.items()}
        D, H, K = spec["d_model"], spec["heads"], spec["kv_heads"]
        self.D, self.H, self.K, self.L = D, H, K, spec["layers"]
        self.Dh, self.G = D // H, H // K
        self.eps = spec["norm"]["eps"]
        self.max_seq = spec["max_seq"]
        self.rope = spec["position"] == "rope"
        if self.rope:
            half = self.Dh // 2
            f = spec["rope"]["base"] ** (-2.0 * np.arange(half) / self.Dh)
            ang = np.arange(self.max_seq)[:, None] * f[None, :]          # [S, half], float64
            self.cos = torch.from_numpy(np.cos(ang).astype(np.float32))
            self.sin = torch.from_numpy(np.sin(ang).astype(np.float32))
        self.head = self.W["embed.weight"] if spec["tie_embeddings"] else self.W["lm_head.weight"]
        self.kc = torch.zeros(self.L, K, self.max_seq, self.Dh)
        self.vc = torch.zeros(self.L, K, self.max_seq, self.Dh)

    def norm(self, x, n):
        g = self.W[n + ".weight"]
        if self.spec["norm"]["kind"] == "layernorm":
            return F.layer_norm(x, (self.D,), g, self.W[n + ".bias"], self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * g

    def lin(self, x, n):
        return F.linear(x, self.W[n + ".weight"], self.W.get(n + ".bias") if self.spec["bias"] else None)

    def apply_rope(self, x, pos):
        """Rotate-half RoPE on x [heads, T, Dh] at absolute positions pos [T]."""
        half = self.Dh // 2
        c, s = self.cos[pos], self.sin[pos]                             # [T, half]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)

    def normalize(self, scores, mask):
        if self.spec["attention"]["normalizer"] == "softmax":
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf"))
            return torch.softmax(scores, dim=-1)
        # softpick: relu(e^x - 1) / (sum |e^x - 1| + 1e-8) over the unmasked
        # row, computed relative to m = max(max x, 0) so nothing overflows.
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        m = torch.clamp(scores.amax(dim=-1, keepdim=True), min=0.0)
        d = torch.exp(scores - m) - torch.exp(-m)
        if mask is not None:
            d = d.masked_fill(mask, 0.0)
        return torch.relu(d) / (d.abs().sum(dim=-1, keepdim=True) + 1e-8 * torch.exp(-m))

    def run(self, tokens, start, use_cache):
        """Logits [T, V] of tokens at positions start..start+T-1; with use_cache
        the keys/values go to the cache and attention reads positions 0..."""
        T = tokens.shape[0]
        H, K, G, Dh = self.H, self.K, self.G, self.Dh
        pos = torch.arange(start, start + T)
        x = F.embedding(tokens, self.W["embed.weight"])
        if not self.rope:
            x = x + self.W["pos_embed.weight"][start:start + T]
        S = start + T
        mask = None
        if T > 1:   # query t (position start+t) sees s <= start+t
            mask = torch.arange(S)[None, :] > (start + torch.arange(T))[:, None]   # [T, S]
        scale = 1.0 / float(np.sqrt(Dh))
        for l in range(self.L):
            p = "layers.%d." % l
            h = self.norm(x, p + "attn_norm")
            q = self.lin(h, p + "attn.wq").view(T, H, Dh).transpose(0, 1)   # [H, T, Dh]
            k = self.lin(h, p + "attn.wk").view(T, K, Dh).transpose(0, 1)   # [K, T, Dh]
            v = self.lin(h, p + "attn.wv").view(T, K, Dh).transpose(0, 1)
            if self.rope:
                q, k = self.apply_rope(q, pos), self.apply_rope(k, pos)
            if use_cache:
                self.kc[l, :, start:S] = k
                self.vc[l, :, start:S] = v
                keys, vals = self.kc[l, :, :S], self.vc[l, :, :S]
            else:
                keys, vals = k, v
            # Query head h = kv * G + g reads kv head h // G.
            qg = q.reshape(K, G * T, Dh)
            scores = torch.bmm(qg, keys.transpose(1, 2)).mul_(scale).view(K, G, T, S)
            P = self.normalize(scores, mask)
            a = torch.bmm(P.view(K, G * T, S), vals).view(H, T, Dh)
            x = x + self.lin(a.transpose(0, 1).reshape(T, H * Dh), p + "attn.wo")
            h = self.norm(x, p + "mlp_norm")
            kind = self.spec["mlp"]["kind"]
            if kind == "swiglu":
                m = F.silu(self.lin(h, p + "mlp.w_gate")) * self.lin(h, p + "mlp.w_up")
            elif kind == "gelu":
                m = F.gelu(self.lin(h, p + "mlp.w_up"), approximate="tanh")
            else:
                m = torch.relu(self.lin(h, p + "mlp.w_up")).square()
            x = x + self.lin(m, p + "mlp.w_down")
        return F.linear(self.norm(x, "norm"), self.head)

    def forward(self, tokens):
        return self.run(tokens, 0, use_cache=False)

    def prefill(self, tokens):
        return self.run(tokens, 0, use_cache=True)

    def decode(self, token, pos):
        return self.run(token.view(1), pos, use_cache=True)[0]


# ---------------------------------------------------------------- checks and timings


def rel_err(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        return float("inf"), "shape %s vs %s" % (list(a.shape), list(ref.shape))
    if not np.all(np.isfinite(a)):
        return float("inf"), "non-finite values"
    mref = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(a - ref)))
    return (err / mref if mref else (0.0 if err == 0 else float("inf"))), None


def check_entry(name, a, ref, rtol):
    rel, why = rel_err(a, ref)
    out = {"rel_max_err": rel, "ok": bool(why is None and rel <= rtol)}
    if why:
        out["problem"] = why
    log("logits %s: rel %.3e %s" % (name, rel, "OK" if out["ok"] else "MISMATCH"))
    return out


def torch_timings(model, prompt, n_decode, repeat):
    pre, dec = [], []
    with torch.no_grad():
        toks = torch.tensor(prompt, dtype=torch.long)
        for r in range(repeat):
            log("torch repeat %d/%d: prefill %d tokens" % (r + 1, repeat, len(prompt)))
            t0 = time.perf_counter()
            logits = model.prefill(toks)
            pre.append(time.perf_counter() - t0)
            if not n_decode:
                continue
            log("torch repeat %d/%d: decode %d tokens" % (r + 1, repeat, n_decode))
            tok = logits[-1].argmax()
            t0 = time.perf_counter()
            for i in range(n_decode):
                row = model.decode(tok, len(prompt) + i)
                tok = row.argmax()
            dec.append(time.perf_counter() - t0)
    out = {"prefill_seconds": pre, "prefill_median_seconds": median(pre),
           "prefill_tokens_per_s": len(prompt) / median(pre)}
    out["decode_seconds"] = dec
    out["decode_median_seconds"] = median(dec)
    out["decode_tokens_per_s"] = n_decode / median(dec) if dec else None
    return out


def openblas_info():
    """Config and thread count of the OpenBLAS numpy loaded (threadpoolctl if
    present, else the library's own openblas_get_* through ctypes)."""
    info = {"threads": None, "config": None, "thread_check": "unavailable", "library": None}
    try:
        import threadpoolctl
        for d in threadpoolctl.threadpool_info():
            if d.get("internal_api") == "openblas":
                info.update(threads=d.get("num_threads"), library=d.get("filepath"),
                            config="OpenBLAS %s %s" % (d.get("version"), d.get("architecture")),
                            thread_check="threadpoolctl")
                return info
    except ImportError:
        pass
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "openblas" in line and ".so" in line})
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_config.restype = ctypes.c_char_p
            info.update(threads=int(lib.openblas_get_num_threads()),
                        config=lib.openblas_get_config().decode(), library=path,
                        thread_check="threadpoolctl not installed; ctypes openblas_get_num_threads()")
            return info
        except (OSError, AttributeError):
            continue
    return info


def time_gemm(M, K, N, repeat, copies=1):
    """GFLOP/s of numpy float32 x @ W^T with W [N, K] (the model's layout).

    With copies > 1 the calls cycle through that many distinct W, so each
    call finds its weights out of cache, as every GEMM of a model run does
    (all other layers' weights pass through the cache in between).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    ws = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(copies)]
    c = np.empty((M, N), dtype=np.float32)
    for w in ws:
        np.matmul(a, w.T, out=c)
    t0 = time.perf_counter()
    np.matmul(a, ws[0].T, out=c)
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(copies, int(0.05 / one))     # ~50 ms per timed batch
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(inner):
            np.matmul(a, ws[i % copies].T, out=c)
        times.append((time.perf_counter() - t0) / inner)
    return 2.0 * M * N * K / median(times) / 1e9


def cold_copies(K, N, llc_bytes=32 << 20):
    """Distinct weight matrices that together span twice the last-level cache."""
    return max(2, -(-2 * llc_bytes // (4 * K * N)))


def model_gemms(spec):
    """The per-layer linear layers in execution order: (name, K, N)."""
    D, H, K, F_ = spec["d_model"], spec["heads"], spec["kv_heads"], spec["mlp"]["width"]
    Dh = D // H
    out = [("wq", D, H * Dh), ("wk", D, K * Dh), ("wv", D, K * Dh), ("wo", H * Dh, D)]
    if spec["mlp"]["kind"] == "swiglu":
        out.append(("w_gate", D, F_))
    out += [("w_up", D, F_), ("w_down", F_, D)]
    return out


def lathe_gemms(gemm_profile, M):
    """lathe's GEMMs with M rows, by (K, N), from `bench --profile`'s gemm_profile.

    The runtime times every matrix product that a compiled kernel hands to
    the host BLAS (lathe_host_gemm), per shape. Kernels are fused (a norm,
    three projections and RoPE are one kernel), so kernel times alone no
    longer isolate the GEMMs; these rows do. Batched products (attention
    has none since it became one fused kernel) are left out.
    """
    out = {}
    for g in gemm_profile:
        if g["m"] != M or g["batch"] != 1:
            continue
        row = out.setdefault((g["k"], g["n"]), {"calls": 0, "seconds": 0.0})
        row["calls"] += g["calls"]
        row["seconds"] += g["seconds"]
    return out


# ---------------------------------------------------------------- main


def main():
    args = ARGS
    torch.set_num_threads(args.threads)
    lathec = os.path.join(args.bin, "lathec")
    lathe_run = os.path.join(args.bin, "lathe-run")
    work = args.workdir or tempfile.mkdtemp(prefix="lathe-bench-")
    os.makedirs(work, exist_ok=True)
    spec = reference.load_spec(args.spec)
    result = {"spec": os.path.relpath(args.spec, REPO) if args.spec.startswith(REPO) else args.spec,
              "model": spec["name"], "workdir": work, "threads": args.threads,
              "prompt_len": args.prompt_len, "decode_tokens": args.decode, "repeat": args.repeat}

    art = args.artifact
    if not art:
        art = os.path.join(work, spec["name"] + ".lathe")
        _, secs = run("compile", [lathec, args.spec, "--target=cpu", "-o", art])
        result["compile_seconds"] = secs
    weights = args.weights
    if not weights:
        weights = os.path.join(work, spec["name"] + ".safetensors")
        run("init", [lathe_run, art, "init", "--seed", args.seed, "-o", weights])
    run("info", [lathe_run, art, "info"], capture=True)

    # lathe's benchmark first, while nothing else runs.
    bench_out, _ = run("bench", [lathe_run, art, "bench", "--weights", weights,
                                 "--prompt-len", args.prompt_len, "--decode", args.decode,
                                 "--repeat", args.repeat, "--profile",
                                 "--bandwidth-mib", args.bandwidth_mib], capture=True)
    bench = json.loads(bench_out)
    with open(os.path.join(work, "lathe-bench.json"), "w") as f:
        f.write(bench_out)
    keep = ["prefill_entry", "prefill_kernels", "decode_kernels", "prefill_seconds",
            "prefill_median_seconds", "prefill_tokens_per_s", "prefill_gflops_per_s",
            "decode_seconds", "decode_median_seconds", "decode_tokens_per_s",
            "decode_gflops_per_s", "peak_rss_bytes", "peak_rss_after_load_bytes",
            "rss_before_load_bytes", "weights_bytes", "kv_cache_bytes", "arena_bytes",
            "rss_budget_bytes", "rss_within_budget", "read_bandwidth_gbs",
            "read_bandwidth_single_stream_gbs", "read_bandwidth_multi_stream_gbs",
            "bandwidth_passes_gbs", "bandwidth_multi_stream_passes_gbs",
            "bandwidth_streams", "bandwidth_buffer_bytes", "llc_bytes",
            "decode_bytes_per_token", "decode_bound_tokens_per_s", "decode_vs_bound",
            "profile_kernel_seconds", "load_seconds"]
    result["lathe"] = {k: bench.get(k) for k in keep}
    result["lathe"]["bench_json"] = os.path.join(work, "lathe-bench.json")

    # Logits: lathe (forward; prefill + decode) against torch (and torch
    # against the float64 reference).
    weights_np, _ = safetensors_np.load(weights)
    model = TorchDecoder(spec, weights_np)
    n = max(2, min(args.check_tokens, spec["max_seq"]))
    vocab = spec["vocab"]
    check_tokens = [b % vocab for b in (BENCH_TEXT * (n // len(BENCH_TEXT) + 1))[:n]]
    tok_list = ",".join(map(str, check_tokens))
    with torch.no_grad():
        t = torch.tensor(check_tokens, dtype=torch.long)
        torch_fwd = model.forward(t).numpy()
        n_pre = max(1, n - 4)
        rows = [model.prefill(t[:n_pre]).numpy()]
        for i in range(n_pre, n):
            rows.append(model.decode(t[i], i).numpy()[None, :])
        torch_cached = np.concatenate(rows)
    checks = {"tokens": n, "rtol": args.rtol,
              "measure": "max |a - b| / max |b| over all rows and the vocabulary"}
    if not args.no_forward_check:
        fwd_npy = os.path.join(work, "lathe-forward.npy")
        run("forward", [lathe_run, art, "forward", "--weights", weights, "--tokens", tok_list,
                        "--logits-out", fwd_npy], capture=True)
        checks["lathe_forward_vs_torch"] = check_entry("lathe forward vs torch", np.load(fwd_npy),
                                                       torch_fwd, args.rtol)
    cached_npy = os.path.join(work, "lathe-cached.npy")
    run("cached_forward", [lathe_run, art, "cached-forward", "--weights", weights,
                           "--tokens", tok_list, "--prefill", n_pre, "--logits-out", cached_npy],
        capture=True)
    checks["lathe_prefill_decode_vs_torch"] = check_entry(
        "lathe prefill+decode vs torch", np.load(cached_npy), torch_fwd, args.rtol)
    checks["torch_cache_vs_torch_forward"] = check_entry(
        "torch prefill+decode vs torch forward", torch_cached, torch_fwd, args.rtol)
    if not args.no_reference:
        ref = reference.forward(spec, weights_np, check_tokens)
        checks["torch_vs_float64_reference"] = check_entry("torch vs float64 reference",
                                                           torch_fwd, ref, args.rtol)
    checks["ok"] = all(v["ok"] for v in checks.values() if isinstance(v, dict))
    result["logits_check"] = checks

    # torch timings: the same prompt as lathe-run bench, the same protocol.
    prompt = [b % vocab for b in (BENCH_TEXT * (args.prompt_len // len(BENCH_TEXT) + 1))[:args.prompt_len]]
    result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                       "mode": "eager, float32, torch.no_grad, KV cache",
                       **torch_timings(model, prompt, args.decode, args.repeat)}

    # GEMMs: OpenBLAS through numpy against lathe's GEMM kernels.
    # M is the row count of the prefill entry lathe ran (its bucket).
    entry = bench["prefill_entry"]
    M = args.gemm_m or (int(entry[len("prefill_"):]) if entry.startswith("prefill_") else spec["max_seq"])
    blas = openblas_info()
    measured = lathe_gemms(bench.get("gemm_profile", []), M)
    shapes = []
    seen = set()
    for name, K, N in model_gemms(spec) + [("lm_head", spec["d_model"], spec["vocab"])]:
        if (K, N) in seen:
            continue
        seen.add((K, N))
        names = [nm for nm, k, nn in model_gemms(spec) if (k, nn) == (K, N)]
        if (spec["d_model"], spec["vocab"]) == (K, N):
            names.append("lm_head")
        log("numpy/OpenBLAS sgemm M=%d K=%d N=%d" % (M, K, N))
        ob_warm = time_gemm(M, K, N, args.gemm_repeat)
        ob = time_gemm(M, K, N, args.gemm_repeat, cold_copies(K, N, bench.get("llc_bytes") or (32 << 20)))
        row = measured.get((K, N))
        flops = 2 * M * N * K
        lg = flops * row["calls"] / row["seconds"] / 1e9 if row and row["seconds"] > 0 else None
        shapes.append({"M": M, "K": K, "N": N, "layers": names, "flops": flops,
                       "openblas_gflops_per_s": ob, "openblas_warm_gflops_per_s": ob_warm,
                       "lathe_gflops_per_s": lg,
                       "lathe_calls": row["calls"] if row else 0,
                       "ratio_lathe_over_openblas": lg / ob if lg else None,
                       "ratio_lathe_over_openblas_warm": lg / ob_warm if lg else None})
    # Same mix: lathe's total GEMM time against OpenBLAS's time for the same
    # calls at its measured per-shape rates.
    l_secs = sum(measured[(s["K"], s["N"])]["seconds"] for s in shapes if s["lathe_gflops_per_s"])
    l_flops = sum(s["flops"] * s["lathe_calls"] for s in shapes if s["lathe_gflops_per_s"])
    ob_secs = sum(s["flops"] * s["lathe_calls"] / (s["openblas_gflops_per_s"] * 1e9)
                  for s in shapes if s["lathe_gflops_per_s"])
    ob_warm_secs = sum(s["flops"] * s["lathe_calls"] / (s["openblas_warm_gflops_per_s"] * 1e9)
                       for s in shapes if s["lathe_gflops_per_s"])
    result["gemm"] = {
        "openblas": blas, "numpy": np.__version__,
        "how_timed": "numpy float32 x @ W.T, W [N, K] contiguous (the model's layout), out= "
                     "preallocated, median of %d batches of ~50 ms; openblas_gflops_per_s cycles "
                     "through distinct W spanning twice the last-level cache, so that each call "
                     "reads its weights from memory as in a model run (the _warm figure reuses one "
                     "W)" % args.gemm_repeat,
        "lathe_how_timed": lathe_gemms.__doc__.strip().replace("\n    ", " "),
        "shapes": shapes,
        "lathe_gemm_gflops_per_s": l_flops / l_secs / 1e9 if l_secs else None,
        "openblas_gflops_per_s_same_mix": l_flops / ob_secs / 1e9 if ob_secs else None,
        "openblas_warm_gflops_per_s_same_mix": l_flops / ob_warm_secs / 1e9 if ob_warm_secs else None,
    }

    lt, tt = result["lathe"], result["torch"]

    def ratio(a, b):
        return a / b if a is not None and b else None
    result["ratios"] = {
        "prefill_lathe_over_torch": ratio(lt["prefill_tokens_per_s"], tt["prefill_tokens_per_s"]),
        "decode_lathe_over_torch": ratio(lt["decode_tokens_per_s"], tt["decode_tokens_per_s"]),
        "decode_lathe_over_bandwidth_bound": lt["decode_vs_bound"],
        "gemm_lathe_over_openblas": ratio(result["gemm"]["lathe_gemm_gflops_per_s"],
                                          result["gemm"]["openblas_gflops_per_s_same_mix"]),
        "gemm_lathe_over_openblas_by_shape": {"%dx%dx%d" % (s["M"], s["K"], s["N"]): s["ratio_lathe_over_openblas"]
                                              for s in shapes},
        "gemm_lathe_over_openblas_warm": ratio(result["gemm"]["lathe_gemm_gflops_per_s"],
                                               result["gemm"]["openblas_warm_gflops_per_s_same_mix"]),
    }
    result["goals"] = {
        "decode_vs_bound_target": 0.8,
        "decode_vs_bound_met": (lt["decode_vs_bound"] or 0) >= 0.8,
        "rss_within_budget": lt["rss_within_budget"],
        "note": "informational: a missed goal does not change the exit status",
    }
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    COMMANDS["this_script"] = CANONICAL + (" " + argv if argv else "")
    result["commands"] = COMMANDS
    result["env"] = {v: os.environ.get(v) for v in OPENBLAS_VARS + ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    result["notes"] = [
        "medians over --repeat runs, no warm-up runs, for lathe and torch alike",
        "decode tokens/s: greedy decoding of --decode tokens after the --prompt-len prompt; "
        "the bound is read bandwidth / weight bytes (every weight read once per token, KV cache ignored)",
        "lathe's prefill runs the %s entry; the logits of every prompt row are computed by both" %
        bench["prefill_entry"],
    ]
    print(json.dumps(result, indent=2, sort_keys=False))
    return 0 if checks["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        log("error: %s" % e)
        sys.exit(1)
