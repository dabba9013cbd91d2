#!/usr/bin/env python3
"""Turns the JSON results of one scripts/bench.sh sitting into a dated section of docs/benchmarks.md.

  bench_report.py RESULTS_DIR [--append docs/benchmarks.md] [--note TEXT]

RESULTS_DIR/<config>/ holds, per kind (train, generate): round-<r>-<impl>-<kind>.json for the timed rounds (impl
iomm, peer-eager, peer-compile) and check-<kind>.json (the peer's --check run on iomm's dump, with iomm's own result
in dump-<kind>.json). Each side's number is the median of all timed steps (or calls) of all its rounds; the spread is
half the 10th–90th percentile range of the same pool. The ratio is iomm's rate ÷ the peer's (samples/s or
images/s; > 1 means iomm is faster).
"""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import textwrap

KINDS = {"train": ("training step", "samples_per_s"), "generate": ("generation", "images_per_s")}
PEERS = ("peer-eager", "peer-compile")


def load(p):
    return json.loads(p.read_text())


def pooled(results):
    """All timed durations of all rounds; (median, half the p10–p90 range, rounds, items per call)."""
    times = sorted(t for r in results for t in r["times"])
    if not times:
        return None

    def pct(q):
        k = (len(times) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(times) - 1)
        return times[lo] + (times[hi] - times[lo]) * (k - lo)

    return dict(median=statistics.median(times), spread=(pct(0.9) - pct(0.1)) / 2, rounds=len(results),
                n=len(times), items=results[0]["batch_size"] if "batch_size" in results[0] else results[0]["images"])


def fmt_time(s):
    if s["median"] < 1:
        return f"{s['median'] * 1e3:.1f} ± {s['spread'] * 1e3:.1f} ms"
    return f"{s['median']:.2f} ± {s['spread']:.2f} s"


def runs(s):
    """rounds × timed steps per round."""
    return f"{s['rounds']}×{s['n'] // s['rounds']}"


def fmt_bytes(b):
    return f"{b / 2**30:.2f} GiB" if b else "—"


def rows_for(config_dir, kind):
    """Table rows of one config and kind: one per peer variant that ran."""
    what, rate = KINDS[kind]
    res = {}
    for impl in ("iomm",) + PEERS:
        rs = [load(p) for p in sorted(config_dir.glob(f"round-*-{impl}-{kind}.json"))]
        if rs:
            res[impl] = (pooled(rs), max(r.get("peak_memory_bytes") or r.get("peak_rss_bytes") or 0 for r in rs),
                         rs[0])
    if "iomm" not in res:
        return []
    mine, mine_mem, first = res["iomm"]
    shape = (f"batch {first['batch_size']}" if kind == "train"
             else f"{first.get('images')} image{'s' if first.get('images') != 1 else ''} × {first.get('sampler_steps')} steps, {first.get('sampler')}, "
                  f"cfg {first.get('cfg_scale')}")
    out = []
    for impl in PEERS:
        if impl not in res:
            continue
        peer, peer_mem, _ = res[impl]
        ratio = peer["median"] / mine["median"]  # same items per call: rate ratio = inverse time ratio
        out.append(f"| {config_dir.name} | {what} ({shape}) | {fmt_time(mine)} ({runs(mine)}) "
                   f"| {impl}: {fmt_time(peer)} ({runs(peer)}) "
                   f"| **{ratio:.2f}×** | {fmt_bytes(mine_mem)} / {fmt_bytes(peer_mem)} |")
    return out


def agreement(config_dir):
    """The sentence saying that both sides computed the same thing."""
    parts = []
    t = config_dir / "check-train.json"
    if t.exists():
        peer, iomm = load(t), load(config_dir / "dump-train.json")
        n = min(len(peer["losses"]), len(iomm["losses"]))
        worst = max(abs(a - b) / abs(b) for a, b in zip(peer["losses"][:n], iomm["losses"][:n]))
        first = abs(peer["losses"][0] - iomm["losses"][0]) / abs(iomm["losses"][0])
        parts.append(f"first loss iomm {iomm['losses'][0]:.7f} vs peer {peer['losses'][0]:.7f} (relative "
                     f"{first:.1e}), all {n} steps within {worst:.1e}")
    g = config_dir / "check-generate.json"
    if g.exists():
        parts.append(f"images max abs error {load(g).get('max_abs_err', float('nan')):.1e}")
    return f"- {config_dir.name}: " + "; ".join(parts) + "." if parts else None


def section(results, note):
    configs = sorted(d for d in results.iterdir() if d.is_dir())
    meta = next((load(p) for d in configs for p in sorted(d.glob("round-*-iomm-train.json"))), {})
    date = datetime.date.today().isoformat()
    cores = os.cpu_count()
    lines = [f"## {date} — training step and generation vs the PyTorch peer (CPU, {cores} cores)", ""]
    lines.append(f"`scripts/bench.sh` in one sitting, iomm and the peer alternating round by round, torch threads: "
                 f"{meta.get('threads', '?')} each, float32. The peer is bench/peer/ (transformers' "
                 "InternVL, diffusers' FluxTransformer2DModel / AutoencoderKL, the RQA as an nn.Module, AdamW + "
                 "clip + EMA; the LLM prefix once without grad with its KV cache, like iomm). Times are the median of "
                 "all timed steps (calls) of all rounds ± half their 10–90th percentile range, (rounds × steps); "
                 "the ratio is iomm's samples/s (images/s) ÷ the peer's. Memory is the peak RSS of each process.")
    lines[-1] = textwrap.fill(lines[-1], 118)
    if note:
        lines += ["", textwrap.fill(note, 118)]
    lines += ["", "| config | what | iomm | peer | ratio iomm ÷ peer | peak memory iomm / peer |",
              "|---|---|---|---|---|---|"]
    for d in configs:
        for kind in KINDS:
            lines += rows_for(d, kind)
    lines += ["", "Both sides compute the same thing (`peer.py --check` on iomm's dump of the same step):"]
    lines += [a for a in (agreement(d) for d in configs) if a]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=pathlib.Path)
    ap.add_argument("--append", type=pathlib.Path, help="append the section to this markdown file")
    ap.add_argument("--note", default="", help="a line under the section's heading (e.g. the machine's load)")
    a = ap.parse_args()
    text = section(a.results, a.note)
    print(text)
    if a.append:
        with a.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
