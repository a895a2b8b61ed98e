"""numpy reference and checks for the toy cached model (lathe-make-test-artifact
--model kv): k[s] = embed[tok[s]] * norm * (1 + s/8), c[t] = mean(k[0..t]),
logits = c lm_head^T + bias.

  toy_kv.py check WEIGHTS LOGITS.npy TOKENS      logits match the reference
  toy_kv.py same A.npy[:ROWS] B.npy[:ROWS]       two logits files agree
  toy_kv.py greedy WEIGHTS PROMPT N MAX_SEQ      expected `generate
                                                 --temperature 0` stdout
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_util  # noqa: E402


def reference(weights, tokens):
    h = weights["embed.weight"][tokens].astype(np.float64) * weights["norm.weight"]
    k = h * (1.0 + np.arange(len(tokens))[:, None] / 8.0)
    c = np.cumsum(k, axis=0) / np.arange(1, len(tokens) + 1)[:, None]
    return c @ weights["lm_head.weight"].astype(np.float64).T + weights["lm_head.bias"]


def load_rows(spec):
    """FILE.npy or FILE.npy[A:B] (rows A..B-1)."""
    path, _, rows = spec.partition("[")
    a = np.load(path)
    if rows:
        lo, hi = rows.rstrip("]").split(":")
        a = a[int(lo):int(hi)]
    return a


def escape(b):
    if b == 0x5C:
        return "\\\\"
    if 0x20 <= b < 0x7F or b in (0x0A, 0x09):
        return chr(b)
    return "\\x%02x" % b


def main(argv):
    op = argv[1]
    if op == "check":
        weights, _ = safetensors_util.read(argv[2])
        logits = np.load(argv[3])
        tokens = [int(t) for t in argv[4].split(",")]
        assert logits.dtype == np.float32, logits.dtype
        assert logits.shape == (len(tokens), weights["lm_head.weight"].shape[0]), logits.shape
        err = np.max(np.abs(logits - reference(weights, tokens)))
        assert err < 1e-4, f"max abs error {err}"
        print(f"OK max_abs_err={err:.3g}")
    elif op == "same":
        a, b = load_rows(argv[2]), load_rows(argv[3])
        assert a.shape == b.shape, (a.shape, b.shape)
        err = np.max(np.abs(a - b))
        assert err < 1e-5, f"max abs difference {err}"
        print(f"SAME max_abs_diff={err:.3g}")
    elif op == "greedy":
        weights, _ = safetensors_util.read(argv[2])
        tokens = list(argv[3].encode())
        n, max_seq = int(argv[4]), int(argv[5])
        out = "".join(escape(t) for t in tokens)
        for _ in range(n):
            if len(tokens) >= max_seq:
                break
            tokens.append(int(np.argmax(reference(weights, tokens)[-1])))
            out += escape(tokens[-1])
        print(out)
    else:
        sys.exit("unknown op " + op)


if __name__ == "__main__":
    main(sys.argv)
