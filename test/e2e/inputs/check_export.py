"""Checks an export directory: every module file exists, every launch's args
are valid buffer ids and every launched kernel is an entry of the PTX."""
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
for e in m["entries"]:
    for l in e["launches"]:
        assert all(0 <= a < nbuf for a in l["args"]), l
        assert l["kernel"] in entries_in_ptx, l["kernel"]
        assert len(l["grid"]) == 3 and len(l["block"]) == 3, l
    print(f"{e['name']}: {len(e['launches'])} launches, all args valid, all kernels in the PTX")
