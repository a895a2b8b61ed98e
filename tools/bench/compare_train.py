#!/usr/bin/python3
"""lathe's compiled training step against PyTorch eager, on one machine, in one run.

Run it exactly like this (OpenBLAS reads these variables when numpy/torch are
imported, so they must be unset before Python starts; the script refuses to
run if either is set):

  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 \\
      tools/bench/compare_train.py [--spec examples/gpt2-124m.yaml] [--batch 4] [--seq 64]

It
  1. compiles the spec with `lathec --train --train-seq SEQ --train-batch
     N` (N: --train-batch, default --batch: the whole batch as one pass of
     BATCH x SEQ rows, as torch runs it) and writes weights with
     `lathe-run init`;
  2. runs `lathe-run ART bench-train` (--warmup-steps 1, then --steps timed
     optimizer steps of --batch windows taken in order from --data);
  3. builds the same model in PyTorch eager (float32, batched, written from
     docs/model-and-weights.md) from those weights, with AdamW (beta1 0.9,
     beta2 0.95, eps 1e-8, weight decay 0.1 except norm gains and biases),
     global-norm clipping at 1.0 and the same learning rate, and runs the
     same steps on the same windows;
  4. checks that the losses agree step by step (the first before any update
     to --rtol, later ones to 10 --rtol: float32 updates drift apart);
  5. measures the machine's fp32 FMA peak (tools/bench/fma_peak.c, the same
     threads) and the step floor it implies, FLOPs per step / peak;
  6. prints ONE JSON object: both step times, tokens/s, peak RSS, the ratio
     torch/lathe step time (> 1: lathe is faster), the machine's peak, the
     floor and lathe's share of the peak, and the commands.

Exit status: 0 when everything ran and the losses agree (speed goals do not
fail it), 1 on an error or a loss mismatch.
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
             "tools/bench/compare_train.py")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=os.path.join(REPO, "examples", "gpt2-124m.yaml"))
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bin"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--data", default=os.path.join(REPO, "examples", "tinyshakespeare.txt"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=None,
                    help="sequences per lathe pass (lathec --train-batch; default: --batch, "
                         "the whole batch in one pass, as torch runs it)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps, after one warmup step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rtol", type=float, default=1e-3)
    return ap.parse_args(argv)


ARGS = parse_args(sys.argv[1:])
if any(v in os.environ for v in OPENBLAS_VARS):
    sys.stderr.write("compare_train.py: refusing to run with %s set.\nRun: %s ...\n"
                     % (" or ".join(OPENBLAS_VARS), CANONICAL))
    sys.exit(1)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "test", "reference"))
import decoder as reference  # noqa: E402
import safetensors_np  # noqa: E402

COMMANDS = {}


def log(msg):
    sys.stderr.write("compare_train: %s\n" % msg)
    sys.stderr.flush()


def machine_peak(work, threads):
    """tools/bench/fma_peak.c's fp32 FMA peak over `threads` threads, or why not."""
    exe = os.path.join(work, "fma_peak")
    src = os.path.join(REPO, "tools", "bench", "fma_peak.c")
    build = subprocess.run(["cc", "-O3", "-mavx2", "-mfma", "-pthread", src, "-o", exe],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if build.returncode != 0:
        return {"fma_peak": "not built: " + build.stderr.decode(errors="replace")[-200:]}
    out = subprocess.run([exe, str(threads)], stdout=subprocess.PIPE)
    if out.returncode != 0:
        return {"fma_peak": "failed"}
    d = json.loads(out.stdout)
    return {"fma_peak_gflops": d["gflops"], "fma_peak_threads": d["threads"]}


def run(name, cmd):
    COMMANDS[name] = " ".join(shlex.quote(str(c)) for c in cmd)
    log("running: " + COMMANDS[name])
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit("compare_train: %s failed (exit %d):\n%s"
                         % (name, proc.returncode, proc.stderr.decode(errors="replace")[-2000:]))
    return proc.stdout.decode()


class BatchedDecoder(torch.nn.Module):
    """The standard decoder of docs/model-and-weights.md on [B, T] tokens."""

    def __init__(self, spec, weights):
        super().__init__()
        self.spec = spec
        self.p = torch.nn.ParameterDict({
            k.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(np.array(v, np.float32)))
            for k, v in weights.items()})
        D, H, K = spec["d_model"], spec["heads"], spec["kv_heads"]
        self.D, self.H, self.K, self.L, self.Dh = D, H, K, spec["layers"], D // H
        self.eps = spec["norm"]["eps"]
        if spec["position"] == "rope":
            half = self.Dh // 2
            f = spec["rope"]["base"] ** (-2.0 * np.arange(half) / self.Dh)
            ang = np.arange(spec["max_seq"])[:, None] * f[None, :]
            self.cos = torch.from_numpy(np.cos(ang).astype(np.float32))
            self.sin = torch.from_numpy(np.sin(ang).astype(np.float32))

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def has(self, name):
        return name.replace(".", "__") in self.p

    def norm(self, x, n):
        if self.spec["norm"]["kind"] == "layernorm":
            return F.layer_norm(x, (self.D,), self.w(n + ".weight"), self.w(n + ".bias"), self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w(n + ".weight")

    def lin(self, x, n):
        return F.linear(x, self.w(n + ".weight"), self.w(n + ".bias") if self.has(n + ".bias") else None)

    def rope(self, x):  # [B, heads, T, Dh]
        T, half = x.shape[2], self.Dh // 2
        c, s = self.cos[:T], self.sin[:T]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)

    def forward(self, tokens):
        B, T = tokens.shape
        H, K, Dh = self.H, self.K, self.Dh
        x = F.embedding(tokens, self.w("embed.weight"))
        if self.spec["position"] == "learned":
            x = x + self.w("pos_embed.weight")[:T]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        for l in range(self.L):
            p = "layers.%d." % l
            h = self.norm(x, p + "attn_norm")
            q = self.lin(h, p + "attn.wq").view(B, T, H, Dh).transpose(1, 2)
            k = self.lin(h, p + "attn.wk").view(B, T, K, Dh).transpose(1, 2)
            v = self.lin(h, p + "attn.wv").view(B, T, K, Dh).transpose(1, 2)
            if self.spec["position"] == "rope":
                q, k = self.rope(q), self.rope(k)
            k = k.repeat_interleave(H // K, dim=1)
            v = v.repeat_interleave(H // K, dim=1)
            s = (q @ k.transpose(-1, -2)) / float(np.sqrt(Dh))
            if self.spec["attention"]["normalizer"] != "softmax":
                raise SystemExit("compare_train: only softmax attention here")
            a = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
            x = x + self.lin(a.transpose(1, 2).reshape(B, T, H * Dh), p + "attn.wo")
            h = self.norm(x, p + "mlp_norm")
            kind = self.spec["mlp"]["kind"]
            if kind == "swiglu":
                m = F.silu(self.lin(h, p + "mlp.w_gate")) * self.lin(h, p + "mlp.w_up")
            elif kind == "gelu":
                m = F.gelu(self.lin(h, p + "mlp.w_up"), approximate="tanh")
            else:
                m = torch.relu(self.lin(h, p + "mlp.w_up")).square()
            x = x + self.lin(m, p + "mlp.w_down")
        head = self.w("embed.weight") if self.spec["tie_embeddings"] else self.w("lm_head.weight")
        return F.linear(self.norm(x, "norm"), head)


def windows(data, step, batch, seq):
    """Rows of step `step`: bytes [(step B + b)(T + 1), ... + T + 1), as bench-train takes them."""
    rows = []
    for b in range(batch):
        start = (step * batch + b) * (seq + 1)
        rows.append(list(data[start:start + seq + 1]))
    t = torch.tensor(rows, dtype=torch.long)
    return t[:, :-1], t[:, 1:]


def main():
    args = ARGS
    torch.set_num_threads(args.threads)
    work = args.workdir or tempfile.mkdtemp(prefix="lathe-train-bench-")
    os.makedirs(work, exist_ok=True)
    spec = reference.load_spec(args.spec)
    lathec, lathe_run = os.path.join(args.bin, "lathec"), os.path.join(args.bin, "lathe-run")
    art = os.path.join(work, spec["name"] + ".train.lathe")
    weights = os.path.join(work, spec["name"] + ".safetensors")
    t0 = time.monotonic()
    packed = args.train_batch or args.batch
    run("compile", [lathec, args.spec, "--train", "--train-seq", args.seq, "--train-batch",
                    packed, "-o", art])
    compile_seconds = time.monotonic() - t0
    run("init", [lathe_run, art, "init", "--seed", args.seed, "-o", weights])
    out = run("bench-train", [lathe_run, art, "bench-train", "--weights", weights, "--batch",
                              args.batch, "--steps", args.steps, "--warmup-steps", 1,
                              "--lr", args.lr, "--data", args.data])
    lathe = json.loads(out)

    # torch: same weights, same windows, same optimizer.
    W, _ = safetensors_np.load(weights)
    model = BatchedDecoder(spec, W)
    decay, no_decay = [], []
    for key, param in model.p.items():
        name = key.replace("__", ".")
        (no_decay if name.endswith(".bias") or "norm" in name else decay).append(param)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    with open(args.data, "rb") as f:
        data = f.read()
    torch_losses, torch_seconds = [], []
    for step in range(1 + args.steps):
        tokens, targets = windows(data, step, args.batch, args.seq)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        took = time.perf_counter() - start
        log("torch step %d/%d: %.3f s, loss %.4f" % (step + 1, 1 + args.steps, took, loss.item()))
        torch_losses.append(loss.item())
        if step >= 1:
            torch_seconds.append(took)

    checks, ok = [], True
    for i, (a, b) in enumerate(zip(lathe["losses"], torch_losses)):
        tol = args.rtol if i == 0 else 10 * args.rtol
        rel = abs(a - b) / abs(b)
        good = rel <= tol
        ok &= good
        checks.append({"step": i + 1, "lathe": a, "torch": b, "rel": rel, "tol": tol, "ok": good})
    torch_median = float(np.median(torch_seconds))
    peak = machine_peak(work, args.threads)
    result = {
        "spec": os.path.relpath(args.spec, REPO), "model": spec["name"], "batch": args.batch,
        "train_batch": packed,
        "seq": args.seq, "timed_steps": args.steps, "threads": args.threads, "lr": args.lr,
        "compile_seconds": compile_seconds,
        "lathe": {k: lathe[k] for k in ("step_seconds", "step_median_seconds", "tokens_per_s",
                                        "flops_per_step", "gflops_per_s", "peak_rss_bytes",
                                        "losses")},
        "torch": {"version": torch.__version__, "mode": "eager, float32, batched, AdamW",
                  "step_seconds": torch_seconds, "step_median_seconds": torch_median,
                  "tokens_per_s": args.batch * args.seq / torch_median,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "losses": torch_losses},
        "loss_check": {"ok": ok, "steps": checks},
        "ratios": {"torch_step_over_lathe_step": torch_median / lathe["step_median_seconds"]},
        # The step's FLOPs at the machine's measured FMA peak: no step is faster.
        "machine": dict(peak, step_floor_seconds=(
            lathe["flops_per_step"] / (peak["fma_peak_gflops"] * 1e9)
            if "fma_peak_gflops" in peak else None),
            lathe_share_of_peak=(lathe["gflops_per_s"] / peak["fma_peak_gflops"]
                                 if "fma_peak_gflops" in peak else None)),
        "goals": {"step_seconds_target": 0.9 if spec["name"] == "gpt2-124m" else None,
                  "note": "informational: a missed goal does not change the exit status"},
        "commands": dict(COMMANDS, this_script=CANONICAL + " " + " ".join(
            shlex.quote(a) for a in sys.argv[1:])),
    }
    print(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
