"""Checks lathe-run's toy-model logits against a numpy reference.

  check_toy.py WEIGHTS LOGITS.npy TOKENS [--init]

--init also checks the weights look like lathe-run init's output for the toy
model (normal std 1.0 / 0.5, ones, zeros).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_util  # noqa: E402


def main(argv):
    weights, _ = safetensors_util.read(argv[1])
    logits = np.load(argv[2])
    tokens = [int(t) for t in argv[3].split(",")]
    assert logits.dtype == np.float32, logits.dtype
    assert logits.shape == (len(tokens), weights["lm_head.weight"].shape[0]), logits.shape

    h = weights["embed.weight"][tokens].astype(np.float64) * weights["norm.weight"]
    ref = h @ weights["lm_head.weight"].astype(np.float64).T + weights["lm_head.bias"]
    err = np.max(np.abs(logits - ref))
    assert err < 1e-4, f"max abs error {err}"

    if "--init" in argv:
        assert np.all(weights["norm.weight"] == 1.0)
        assert np.all(weights["lm_head.bias"] == 0.0)
        for name, std in [("embed.weight", 1.0), ("lm_head.weight", 0.5)]:
            w = weights[name]
            assert abs(w.std() - std) < 0.15 * std, (name, w.std())
            assert abs(w.mean()) < 0.2 * std, (name, w.mean())
    print(f"OK max_abs_err={err:.3g}")


if __name__ == "__main__":
    main(sys.argv)
