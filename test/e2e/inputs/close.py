#!/usr/bin/python3
"""close.py A.npy B.npy: prints CLOSE when two logit arrays agree.

Emulated GPU kernels and cpu kernels differ only in summation order and in
exp/tanh approximations: float32 rounding, far below the reference's 1e-4.
"""
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape, (a.shape, b.shape)
err = np.abs(a - b).max() / np.abs(a).max()
assert err <= 2e-5, f"relative error {err}"
print("CLOSE")
