"""Minimal safetensors reading and rewriting for the runtime tests.

Usage as a script (writes OUT from IN with one edit applied):
  safetensors_util.py IN OUT drop NAME
  safetensors_util.py IN OUT set NAME KEY JSON     e.g. set norm.weight shape [4,2]
  safetensors_util.py IN OUT header TEXT           replace the JSON header text
  safetensors_util.py IN OUT header-len N          claim a header of N bytes
  safetensors_util.py IN OUT truncate-data N       drop the last N data bytes
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "F64": np.float64}


def read_raw(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def read(path):
    """Returns ({name: ndarray}, metadata)."""
    header, data = read_raw(path)
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return tensors, meta


def write_raw(path, header_text, data, header_len=None):
    raw = header_text.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len))
        f.write(raw)
        f.write(data)


def main(argv):
    src, dst, op = argv[1], argv[2], argv[3]
    header, data = read_raw(src)
    if op == "drop":
        del header[argv[4]]
    elif op == "set":
        header[argv[4]][argv[5]] = json.loads(argv[6])
    elif op == "header":
        write_raw(dst, argv[4], data)
        return
    elif op == "header-len":
        write_raw(dst, json.dumps(header), data, header_len=int(argv[4]))
        return
    elif op == "truncate-data":
        data = data[:len(data) - int(argv[4])]
    else:
        sys.exit("unknown op " + op)
    write_raw(dst, json.dumps(header), data)


if __name__ == "__main__":
    main(sys.argv)
