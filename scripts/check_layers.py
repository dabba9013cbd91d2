#!/usr/bin/env python3
"""Checks that src/'s layers depend one way only: a file may include headers of its own folder and of lower layers,
never of a higher one or of a sibling on the same layer. CTest runs it (test `layers`); it exits 1 listing every
violation as file:line.

  core  ->  data / text / diffusion  ->  world / report  ->  models  ->  conditioning  ->  model  ->  train  ->  apps  ->  cli

Unit tests (*_test.cpp) are leaves that nothing includes, so they may use testing/ fixtures built from higher
layers; testing/ itself sits just below cli."""
import pathlib
import re
import sys

LAYERS = [
    ["core"],
    ["data", "text", "diffusion"],
    ["world", "report"],
    ["models"],
    ["conditioning"],
    ["model"],
    ["train"],
    ["apps"],
    ["testing"],
    ["cli"],
]
RANK = {d: i for i, layer in enumerate(LAYERS) for d in layer}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)/[^"]+"')


def violations(src: pathlib.Path):
    out = []
    for f in sorted(src.rglob("*")):
        if f.suffix not in (".h", ".cpp") or f.parent == src:
            continue
        here = f.relative_to(src).parts[0]
        if here not in RANK:
            out.append(f"{f}: folder '{here}' has no layer; add it to LAYERS in {pathlib.Path(__file__).name}")
            continue
        if f.name.endswith("_test.cpp"):
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m or m.group(1) == here:
                continue
            there = m.group(1)
            if there not in RANK:
                out.append(f"{f}:{n}: includes '{there}/', which has no layer")
            elif RANK[there] >= RANK[here]:
                out.append(f"{f}:{n}: {here}/ (layer {RANK[here]}) includes {there}/ (layer {RANK[there]}): "
                           f"a lower layer may not depend on a higher one or on a sibling")
    return out


def main():
    src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1] / "src"
    bad = violations(src)
    for v in bad:
        print(v)
    print(f"layers: {len(bad)} violation(s) in {src}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
