"""Writes toy-model weights with numpy alone, in the order and alignment a
foreign writer might choose (unsorted keys, no padding, extra tensor)."""
import json
import struct
import sys

import numpy as np

rng = np.random.default_rng(0)
tensors = {
    "lm_head.bias": rng.standard_normal(32).astype(np.float32),
    "unused.extra": np.arange(3, dtype=np.float32),
    "embed.weight": rng.standard_normal((32, 8)).astype(np.float32),
    "norm.weight": rng.standard_normal(8).astype(np.float32),
    "lm_head.weight": rng.standard_normal((32, 8)).astype(np.float32),
}
header, data, off = {"__metadata__": {"source": "numpy"}}, b"", 1  # start unaligned
data = b"\0"
for name, t in tensors.items():
    raw = t.tobytes()
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
    data += raw
    off += len(raw)
text = json.dumps(header).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
