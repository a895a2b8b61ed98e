"""Runs a command and succeeds only if it exits with exactly the given code.

  expect_exit.py CODE CMD ARGS...

Output (stdout and stderr, merged) goes to stdout for FileCheck. A crash
(death by signal) never counts as the expected code.
"""
import subprocess
import sys

want = int(sys.argv[1])
proc = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
sys.stdout.buffer.write(proc.stdout)
if proc.returncode != want:
    print(f"expect_exit: expected exit code {want}, got {proc.returncode}")
    sys.exit(1)
