"""Checks that lathe-run and the numpy reference ran a looped block for the
same number of iterations, and prints that number.

usage: same_iterations.py LATHE_STDERR REFERENCE_STDOUT
  LATHE_STDERR holds lathe-run forward's "loop: halted after iteration K" or
  "loop: ran all N iterations"; REFERENCE_STDOUT decoder.py
  --print-iterations' "iterations: K". Exit 1 if they differ or are missing.
"""
import re
import sys


def find(path, patterns):
    text = open(path).read()
    for pattern in patterns:
        m = re.search(pattern, text)
        if m:
            return int(m.group(1))
    sys.exit(f"{path}: no iteration count found")


lathe = find(sys.argv[1], [r"loop: halted after iteration (\d+)", r"loop: ran all (\d+) iterations"])
reference = find(sys.argv[2], [r"(?m)^iterations: (\d+)"])
if lathe != reference:
    sys.exit(f"lathe ran {lathe} iterations, the reference {reference}")
print(f"iterations {lathe}")
