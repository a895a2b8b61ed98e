"""Read and write safetensors files with numpy only.

Format: an 8-byte little-endian u64 N, then N bytes of JSON header, then the
raw data. The header maps each tensor name to {"dtype", "shape",
"data_offsets": [begin, end]} (offsets relative to the start of the data) and
may hold a "__metadata__" map of string to string. Tensor data is row-major,
little-endian.
"""
import json
import struct

import numpy as np

# safetensors dtype name -> little-endian numpy dtype.
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def load(path):
    """Return (tensors: dict[str, np.ndarray], metadata: dict[str, str])."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} runs past end of file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dt}")
        dtype = np.dtype(_DTYPES[dt])
        shape = tuple(int(s) for s in info["shape"])
        begin, end = info["data_offsets"]
        want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not (0 <= begin <= end <= len(data)) or end - begin != want:
            raise ValueError(f"{path}: tensor {name!r} has bad data_offsets "
                             f"{[begin, end]} for shape {list(shape)} {dt}")
        # Copy so the result is writable and does not pin the file buffer;
        # convert to native byte order.
        arr = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        out[name] = arr.astype(dtype.newbyteorder("="), copy=True)
    return out, dict(meta)


def save(path, tensors, metadata=None):
    """Write dict[str, np.ndarray] (and optional str->str metadata)."""
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        key = np.dtype(arr.dtype).newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if key not in _NAMES:
            raise ValueError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
        raw = np.ascontiguousarray(arr, dtype=key).tobytes()
        header[name] = {"dtype": _NAMES[key], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)
