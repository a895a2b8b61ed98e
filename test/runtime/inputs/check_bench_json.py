"""Checks the JSON that `lathe-run ART bench` prints (no timing assertions).

  check_bench_json.py OUT.json PROMPT_LEN DECODE REPEAT PREFILL_ENTRY \
      PREFILL_KERNELS DECODE_KERNELS [--profile] [--no-bandwidth]

Prints OK, or the first problem found and exits 1. The whole stdout of the
command must be one JSON object.
"""
import json
import math
import sys


def main(argv):
    path, prompt_len, decode, repeat, entry, pk, dk = argv[:7]
    flags = set(argv[7:])
    prompt_len, decode, repeat, pk, dk = map(int, (prompt_len, decode, repeat, pk, dk))
    with open(path) as f:
        d = json.load(f)  # fails on anything but one JSON value
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    def num(key, positive=True, allow_null=False):
        v = d.get(key, "missing")
        if v is None and allow_null:
            return
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        need(ok and (v > 0 if positive else v >= 0), f"{key}={v!r}")

    need(isinstance(d, dict), "not an object")
    need(d.get("prompt_len") == prompt_len, f"prompt_len={d.get('prompt_len')}")
    need(d.get("decode_tokens") == decode, f"decode_tokens={d.get('decode_tokens')}")
    need(d.get("repeat") == repeat, f"repeat={d.get('repeat')}")
    need(d.get("prefill_entry") == entry, f"prefill_entry={d.get('prefill_entry')}")
    need(d.get("prefill_kernels") == pk, f"prefill_kernels={d.get('prefill_kernels')}")
    need(d.get("decode_kernels") == dk, f"decode_kernels={d.get('decode_kernels')}")
    need(len(d.get("prefill_seconds", [])) == repeat, "prefill_seconds length")
    need(len(d.get("decode_seconds", [])) == (repeat if decode else 0), "decode_seconds length")
    for k in ("prefill_tokens_per_s", "prefill_median_seconds", "peak_rss_bytes",
              "peak_rss_after_load_bytes", "rss_before_load_bytes", "weights_bytes",
              "rss_budget_bytes", "decode_bytes_per_token", "load_seconds"):
        num(k)
    for k in ("kv_cache_bytes", "arena_bytes", "prefill_flops", "decode_flops_per_token",
              "llc_bytes"):
        num(k, positive=False)
    if decode:
        num("decode_tokens_per_s")
        num("decode_median_seconds")
    else:
        need(d.get("decode_tokens_per_s") is None, "decode_tokens_per_s should be null")
    # The budget is weights + KV cache + arena + 64 MiB.
    need(d.get("rss_slack_bytes") == 64 << 20, "rss_slack_bytes")
    need(d.get("rss_budget_bytes") == d.get("weights_bytes", 0) + d.get("kv_cache_bytes", 0)
         + d.get("arena_bytes", 0) + (64 << 20), "rss_budget_bytes != sum")
    need(isinstance(d.get("rss_within_budget"), bool), "rss_within_budget not a bool")
    need(d.get("rss_within_budget") == (d.get("peak_rss_bytes", 0) <= d.get("rss_budget_bytes", 0)),
         "rss_within_budget inconsistent")
    need(d.get("peak_rss_bytes", 0) >= d.get("peak_rss_after_load_bytes", 0), "peak < after-load peak")
    need(d.get("bandwidth_threads") == 2, "bandwidth_threads")
    if "--no-bandwidth" in flags:
        need(d.get("read_bandwidth_gbs") is None, "read_bandwidth_gbs should be null")
        need(d.get("decode_bound_tokens_per_s") is None, "decode_bound should be null")
        need(d.get("bandwidth_passes_gbs") == [], "bandwidth_passes_gbs should be empty")
        need(d.get("bandwidth_multi_stream_passes_gbs") == [],
             "bandwidth_multi_stream_passes_gbs should be empty")
    else:
        num("read_bandwidth_gbs")
        num("decode_bound_tokens_per_s")
        need(len(d.get("bandwidth_passes_gbs", [])) == 2 * d.get("repeat", 0), "bandwidth_passes_gbs length")
        need(len(d.get("bandwidth_multi_stream_passes_gbs", [])) == 2 * d.get("repeat", 0),
             "bandwidth_multi_stream_passes_gbs length")
        need(d.get("bandwidth_streams") == 16, "bandwidth_streams")
        single = d.get("read_bandwidth_single_stream_gbs")
        multi = d.get("read_bandwidth_multi_stream_gbs")
        need(isinstance(single, (int, float)) and isinstance(multi, (int, float)),
             "per-pattern bandwidth medians")
        need(d.get("read_bandwidth_gbs") == max(single, multi),
             "read_bandwidth_gbs is not the faster pattern's median")
        if decode:
            num("decode_vs_bound")
    need(d.get("profiled") == ("--profile" in flags), "profiled")
    if "--profile" in flags:
        prof = d.get("profile", [])
        need(isinstance(prof, list) and prof, "profile empty")
        secs = [p.get("seconds", -1) for p in prof]
        need(secs == sorted(secs, reverse=True), "profile not sorted by time")
        for p in prof:
            for k in ("kernel", "entries", "calls", "seconds", "seconds_per_call",
                      "flops_per_call", "gflops_per_s", "share"):
                need(k in p, f"profile entry lacks {k}")
        calls = {}
        for p in prof:
            for e in p.get("entries", []):
                calls[e] = max(calls.get(e, 0), p.get("calls", 0))
        # Every prefill kernel ran once per repeat, every decode kernel once
        # per decoded token per repeat.
        need(calls.get(entry, 0) >= repeat, f"prefill kernel calls {calls}")
        if decode:
            need(calls.get("decode") == decode * repeat, f"decode kernel calls {calls}")
        need(abs(sum(p.get("share", 0) for p in prof) - 1) < 1e-6, "shares do not sum to 1")
    else:
        need("profile" not in d, "profile present without --profile")
    if problems:
        print("BAD " + "; ".join(problems))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
