#!/usr/bin/env python3
"""Mean ± spread of the tiny-world ablations over seeds, and a verdict per claim of the paper.

    python3 experiments/aggregate.py runs/abl-s0 runs/abl-s1 runs/abl-s2 > table.md

Each argument is one `experiments/run.sh` output (OUT) of one seed; each holds EXPERIMENT/results.json. A row is an
experiment present in any folder; its n says in how many. The spread is the sample standard deviation over seeds.

A claim compares two rows by their stage-2 ShapesEval. It is "reproduced" when the paper's better row is ahead by
more than twice the standard error of the difference of the means (sqrt(s1²/n1 + s2²/n2): about a 95% one-sided
margin at these seed counts, and strict on purpose), "not reproduced" when it is behind by that margin, and
"inconclusive" otherwise. A claim with several comparisons takes the weakest of them.
"""
import json
import math
import pathlib
import statistics
import sys

TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]

# (claim, [(better, worse), ...]); adapter-rqa is the default recipe: image-only -> mix, RQA, mask ratio 0.85.
CLAIMS = [
    ("RQA conditioning beats raw hidden states", [("adapter-rqa", "adapter-raw")]),
    ("RQA conditioning beats MetaQuery-style queries", [("adapter-rqa", "adapter-metaquery")]),
    ("mask ratio 0.85 is the sweet spot (vs 0, 0.45, 0.95)",
     [("adapter-rqa", "mask-0"), ("adapter-rqa", "mask-0.45"), ("adapter-rqa", "mask-0.95")]),
    ("image-only pre-training is as good as pair pre-training under mix fine-tuning (not worse)",
     [("adapter-rqa", "recipe-pair-mix")]),
    ("image-only fine-tuning is worse than mix fine-tuning (after image-only pre-training)",
     [("adapter-rqa", "recipe-image-image")]),
]


def load(folders):
    runs = {}
    for f in folders:
        for r in sorted(pathlib.Path(f).glob("*/results.json")):
            j = json.loads(r.read_text())
            o = j["overall"]
            k1 = next(k for k in o if k.startswith("stage 1"))
            k2 = next(k for k in o if k.startswith("stage 2"))
            cats = j["shapes_eval"][k2]["categories"]
            edit = j.get("edit")
            if edit is None and (r.parent / "eval" / "edit" / "edit.json").exists():  # `iomm eval edit` afterwards
                edit = json.loads((r.parent / "eval" / "edit" / "edit.json").read_text())
            runs.setdefault(r.parent.name, []).append({
                "edit": edit["score"] if edit else float("nan"),
                "edit_control": edit["control_score"] if edit else float("nan"),
                "seed": j["options"]["seed"], "stage2": o[k2], "stage1": o[k1], "untrained": o["untrained"],
                "cats": {t: cats.get(t, {}).get("score", float("nan")) for t in TAGS},
                "data": " → ".join(k.split("(", 1)[1].rstrip(")") for k in (k1, k2)),
                "seconds": j["timings"]["total_s"]})
    return runs


def ms(xs):
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return m, s


def fmt(xs, digits=3):
    m, s = ms(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def verdict(runs, better, worse, equal_ok=False):
    a = [r["stage2"] for r in runs[better]]
    b = [r["stage2"] for r in runs[worse]]
    (ma, sa), (mb, sb) = ms(a), ms(b)
    se = math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    d = ma - mb
    if d > 2 * se:
        v = "reproduced"
    elif d < -2 * se:
        v = "not reproduced"
    else:
        v = "reproduced (no difference)" if equal_ok else "inconclusive"
    return v, f"{better} − {worse} = {d:+.3f} (2·SE {2 * se:.3f})"


def main():
    folders = sys.argv[1:]
    if not folders:
        sys.exit(__doc__)
    runs = load(folders)
    seeds = sorted({r["seed"] for v in runs.values() for r in v})
    print(f"Seeds {seeds} from {len(folders)} folders; mean ± sample standard deviation over the n seeds of each row.\n")
    print("| experiment | n | data | " + " | ".join(TAGS) + " | stage 2 overall | stage 1 overall | untrained | edit | edit, instruction alone | seconds |")
    print("|" + "---|" * (len(TAGS) + 9))
    for name in sorted(runs):
        rs = runs[name]
        cats = [fmt([r["cats"][t] for r in rs], 2) for t in TAGS]
        print(f"| {name} | {len(rs)} | {rs[0]['data']} | " + " | ".join(cats) + f" | **{fmt([r['stage2'] for r in rs])}** | "
              f"{fmt([r['stage1'] for r in rs])} | {fmt([r['untrained'] for r in rs])} | "
              f"{fmt([r['edit'] for r in rs])} | {fmt([r['edit_control'] for r in rs])} | "
              f"{statistics.fmean(r['seconds'] for r in rs):.0f} |")
    print("\n| claim | verdict | comparisons |\n|---|---|---|")
    order = ["not reproduced", "inconclusive", "reproduced (no difference)", "reproduced"]
    for claim, pairs in CLAIMS:
        if any(b not in runs or w not in runs for b, w in pairs):
            print(f"| {claim} | not run | missing: "
                  f"{', '.join(x for p in pairs for x in p if x not in runs)} |")
            continue
        results = [verdict(runs, b, w, equal_ok="not worse" in claim) for b, w in pairs]
        weakest = min((r[0] for r in results), key=order.index)
        n = min(len(runs[x]) for p in pairs for x in p)
        if n < 3:
            weakest = f"inconclusive (n = {n} seeds; reads {weakest})"
        print(f"| {claim} | {weakest} | " + "; ".join(r[1] for r in results) + " |")
    if "adapter-rqa" in runs:
        # Paired by seed: the same model, the same scenes, with and without the reference image.
        d = [r["edit"] - r["edit_control"] for r in runs["adapter-rqa"]]
        m, s = ms(d)
        se = s / math.sqrt(len(d))
        v = "reproduced" if m > 2 * se else "not reproduced" if m < -2 * se else "inconclusive"
        if len(d) < 3:
            v = f"inconclusive (n = {len(d)} seeds; reads {v})"
        print(f"| zero-shot editing works after image-only pre-training (edit score above the instruction alone) "
              f"| {v} | adapter-rqa edit − instruction alone = {m:+.3f} (2·SE {2 * se:.3f}, paired over seeds) |")


if __name__ == "__main__":
    main()
