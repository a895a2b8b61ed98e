#!/usr/bin/python3
"""Each architecture family's example next to the standard decoder of the same size.

Run it like the other benchmarks (OpenBLAS variables unset):

  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tools/bench/families.py

For every family example (three-phase, attn-res, combined, parcae,
loopformer, loopus, and the tapered example) the script writes a "standard" twin: the same spec with the
family keys removed (three_phase, attn_res, loop, mlp.taper). For a looped
model the twin keeps `layers` distinct blocks, so it does the prelude + one
pass of the core + coda; the ratio then shows what the extra iterations
cost. Both are compiled with lathec, initialised with `lathe-run init`, and
timed with `lathe-run bench` (prefill of --prompt-len tokens, decode of
--decode tokens, medians of --repeat) one after the other in this run. It
prints ONE JSON object: per family the kernels per decoder layer (from
`lathec --report`), prefill and decode tokens/s for both models, and the
ratio family / standard.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILIES = ["three-phase", "attn-res", "combined", "parcae", "loopformer", "loopus",
            "tapered-base"]
FAMILY_KEYS = ("three_phase", "attn_res", "loop")


def run(cmd):
    out = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)
    return out.stdout


def kernels_per_layer(lathec, spec):
    """Kernel counts per decoder layer (and iteration) of the forward entry."""
    report = run([lathec, spec, "--report"])
    counts, current = {}, None
    for line in report.splitlines():
        if line.startswith("entry "):
            current = line.split(":")[0][len("entry "):]
        # "layer 3", "layer 1 iteration 2", and a loop's own kernels per
        # iteration ("loop iteration 2").
        m = re.match(r"  ((?:layer|loop) .+): (\d+) kernels", line)
        if m and current == "forward":
            counts[m.group(1)] = int(m.group(2))
    return counts


def bench(bindir, spec, work, args):
    name = os.path.splitext(os.path.basename(spec))[0]
    art = os.path.join(work, name + ".lathe")
    weights = os.path.join(work, name + ".safetensors")
    run([os.path.join(bindir, "lathec"), spec, "-o", art])
    run([os.path.join(bindir, "lathe-run"), art, "init", "--seed", "1", "-o", weights])
    out = json.loads(run([os.path.join(bindir, "lathe-run"), art, "bench", "--weights", weights,
                          "--prompt-len", args.prompt_len, "--decode", args.decode,
                          "--repeat", args.repeat]))
    return {"prefill_tokens_per_s": out["prefill_tokens_per_s"],
            "decode_tokens_per_s": out["decode_tokens_per_s"],
            "prefill_kernels": out["prefill_kernels"],
            "kernels_per_layer": kernels_per_layer(os.path.join(bindir, "lathec"), spec)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bin"))
    ap.add_argument("--prompt-len", type=int, default=192)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if v in os.environ:
            sys.exit("families.py: unset %s first (see tools/bench/README.md)" % v)
    result = {"command": "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "
                         "tools/bench/families.py " + " ".join(sys.argv[1:]),
              "prompt_len": args.prompt_len, "families": {}}
    with tempfile.TemporaryDirectory() as work:
        for fam in args.families.split(","):
            spec_path = os.path.join(REPO, "examples", fam + ".yaml")
            with open(spec_path) as f:
                spec = yaml.safe_load(f)
            twin = {k: v for k, v in spec.items() if k not in FAMILY_KEYS}
            twin["mlp"] = {k: v for k, v in spec["mlp"].items() if k != "taper"}
            twin["name"] = spec["name"] + "-standard"
            twin_path = os.path.join(work, twin["name"] + ".yaml")
            with open(twin_path, "w") as f:
                yaml.safe_dump(twin, f)
            print("families.py: %s" % fam, file=sys.stderr)
            a = bench(args.bin, spec_path, work, args)
            b = bench(args.bin, twin_path, work, args)
            result["families"][fam] = {
                "family": a, "standard": b,
                "prefill_family_over_standard": a["prefill_tokens_per_s"] / b["prefill_tokens_per_s"],
                "decode_family_over_standard": a["decode_tokens_per_s"] / b["decode_tokens_per_s"],
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
