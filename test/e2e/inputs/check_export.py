"""Checks an export directory: every module file exists, every launch's args
are valid buffer ids, every launched kernel is an entry of the PTX, and every
GEMM call (manifest gemm_abi) addresses only elements inside its f32
buffers."""
import json
import os
import re
import sys

d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
mods = []
entries_in_ptx = None
for chip, files in sorted(m["modules"].items()):
    for kind in ("ptx", "cubin"):
        if kind in files:
            assert os.path.getsize(os.path.join(d, files[kind])) > 0, files[kind]
    text = open(os.path.join(d, files["ptx"])).read()
    names = set(re.findall(r"\.visible \.entry (\w+)\(", text))
    entries_in_ptx = names if entries_in_ptx is None else entries_in_ptx & names
    mods.append(f"{chip} ({', '.join(k for k in ('ptx', 'cubin') if k in files)})")
print("modules: " + ", ".join(mods))
nbuf = len(m["buffers"])


def elements(buffer):
    n = 1
    for d in buffer["shape"]:
        n *= d
    return n


def check_gemm(g, args):
    """Each operand's last addressed element, row-major, is inside it."""
    assert len(g["operands"]) == len(args), (g, args)
    assert g["operands"][:3] == ["a", "b", "d"], g
    bufs = dict(zip(g["operands"], (m["buffers"][a] for a in args)))
    assert all(b["dtype"] == "f32" for b in bufs.values()), g
    shape = {"a": ((g["k"], g["m"]) if g["trans_a"] else (g["m"], g["k"]), g["lda"], g["stride_a"]),
             "b": ((g["n"], g["k"]) if g["trans_b"] else (g["k"], g["n"]), g["ldb"], g["stride_b"]),
             "d": ((g["m"], g["n"]), g["ldd"], g["stride_d"])}
    shape["c"] = shape["aux"] = shape["d"]
    for name, buf in bufs.items():
        if name == "bias":
            assert elements(buf) == g["n"], (g, buf)
            continue
        (rows, cols), ld, stride = shape[name]
        assert ld >= cols, (name, g)
        last = (g["batch"] - 1) * stride + (rows - 1) * ld + cols - 1
        assert last < elements(buf), (name, last, buf, g)


gemms = 0
for e in m["entries"]:
    for l in e["launches"]:
        assert all(0 <= a < nbuf for a in l["args"]), l
        if "gemm" in l:
            check_gemm(l["gemm"], l["args"])
            gemms += 1
            continue
        assert l["kernel"] in entries_in_ptx, l["kernel"]
        assert len(l["grid"]) == 3 and len(l["block"]) == 3, l
    ng = sum("gemm" in l for l in e["launches"])
    print(f"{e['name']}: {len(e['launches'])} launches ({ng} GEMM calls), all args valid, "
          "all kernels in the PTX, all GEMMs inside their buffers")
assert (m["gemm_workspace_bytes"] > 0) == (gemms > 0), m["gemm_workspace_bytes"]
