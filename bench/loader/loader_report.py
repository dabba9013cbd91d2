"""Medians of a bench_loader.sh sitting, the iomm / peer ratio, and (with --append) a dated section of
docs/benchmarks.md."""
import argparse
import datetime
import json
import os
import statistics
import subprocess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--resolution", type=int, required=True)
    ap.add_argument("--append")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.results)]
    groups = {}
    for r in rows:
        groups.setdefault((r["format"], r["workers"], r["impl"]), []).append(r["result"]["images_per_s"])
    rounds = max(r["round"] for r in rows)
    lines = [f"| source | workers | iomm img/s | peer img/s | iomm / peer |", "|---|---|---|---|---|"]
    for fmt, w in sorted({(f, w) for f, w, _ in groups}):
        i, p = groups[(fmt, w, "iomm")], groups[(fmt, w, "peer")]
        mi, mp = statistics.median(i), statistics.median(p)
        lines.append(f"| {fmt} 512² → {a.resolution}² | {w} | {mi:.0f} ({min(i):.0f}–{max(i):.0f}) | "
                     f"{mp:.0f} ({min(p):.0f}–{max(p):.0f}) | **{mi / mp:.2f}×** |")
    table = "\n".join(lines)
    print(table)
    if not a.append:
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    section = (f"\n## {datetime.date.today()}: streaming loader vs webdataset + Pillow + DataLoader ({commit})\n\n"
               f"`scripts/bench_loader.sh`: one epoch of {a.count} synthetic photo-like images per format, medians "
               f"(min–max) of {rounds} alternating rounds on this {os.cpu_count()}-core machine. Both sides decode, "
               f"convert to RGB, resize the shorter side to {a.resolution} (bicubic), centre-crop and make a uint8 "
               f"CHW tensor with the caption; iomm's `data scan --shuffle-buffer 1` against the peer's unshuffled "
               f"DataLoader (`batch_size=None`, `prefetch_factor=16`). Times include starting the workers.\n\n"
               f"{table}\n")
    with open(a.append, "a") as f:
        f.write(section)
    print(f"appended to {a.append}")


if __name__ == "__main__":
    main()
