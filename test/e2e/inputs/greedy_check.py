"""Greedy decoding by hand with the numpy reference, compared to lathe-run's
streamed output: usage greedy_check.py SPEC WEIGHTS PROMPT N OUTPUT.txt"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "reference"))
import decoder  # noqa: E402
import safetensors_np  # noqa: E402

spec_path, weights_path, prompt, n, out_path = sys.argv[1:6]
spec = decoder.load_spec(spec_path)
weights, _ = safetensors_np.load(weights_path)
tokens = list(prompt.encode())
for _ in range(int(n)):
    logits = decoder.forward(spec, weights, tokens)
    tokens.append(int(logits[-1].argmax()))

# lathe-run prints printable ASCII as is, a backslash as \\, others as \xNN.
def show(b):
    if b == 0x5C:
        return "\\\\"
    if 0x20 <= b < 0x7F or b in (0x0A, 0x09):
        return chr(b)
    return f"\\x{b:02x}"

expected = "".join(show(b) for b in tokens)
got = open(out_path).read()
got = got[:-1] if got.endswith("\n") else got   # the line end lathe-run adds
if got != expected:
    print(f"GREEDY MISMATCH\n  lathe: {got}\n  numpy: {expected}")
    sys.exit(1)
print("GREEDY OK")
