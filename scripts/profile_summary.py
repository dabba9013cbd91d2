#!/usr/bin/env python3
"""Top operators by self time in a Chrome trace written by torch's profiler (`iomm bench ... --profile T.json`, or
torch.profiler's export_chrome_trace in the peer). Self time = an event's duration less its direct children's on
the same thread (events nest by their [ts, ts + dur] intervals).

  python3 scripts/profile_summary.py TRACE.json [--top 25] [--steps N]
"""
import argparse
import collections
import json


def self_times(events):
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation", "kernel", "gpu_memcpy", None):
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    total = collections.Counter()
    calls = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, self]
        def close(item):
            total[item[1]] += item[2]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                close(stack.pop())
            if stack:
                stack[-1][2] -= e["dur"]
            stack.append([e["ts"] + e["dur"], e["name"], e["dur"]])
            calls[e["name"]] += 1
        while stack:
            close(stack.pop())
    return total, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, default=1, help="divide times by this many profiled steps")
    a = ap.parse_args()
    with open(a.trace) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total, calls = self_times(events)
    all_us = sum(total.values())
    print(f"{'self ms/step':>12} {'share':>6} {'calls/step':>10}  operator")
    for name, us in total.most_common(a.top):
        print(f"{us / 1e3 / a.steps:12.2f} {100 * us / all_us:5.1f}% {calls[name] / a.steps:10.1f}  {name}")
    print(f"{all_us / 1e3 / a.steps:12.2f} total self time per step (all threads)")


if __name__ == "__main__":
    main()
