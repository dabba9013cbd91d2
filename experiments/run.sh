#!/usr/bin/env bash
# Runs the tiny-world ablations: every experiments/*.toml (or the files given) through `iomm demo --experiment`,
# all sharing one understanding model (trained once), then writes OUT/table.md with ShapesEval per category,
# the untrained and stage-1 scores, and run times.
#   bash experiments/run.sh                       # all of them (~11 min each on 2 cores: the default demo took 686 s)
#   bash experiments/run.sh experiments/mask-*.toml
#   OUT=runs/exp EXTRA="--prompts eval-small" bash experiments/run.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${IOMM_BIN:-build/iomm}
OUT=${OUT:-runs/experiments}
SEED=${SEED:-0}
EXTRA=${EXTRA:-}
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(experiments/*.toml)
mkdir -p "$OUT"
if [ ! -f "$OUT/understanding/model/config.json" ]; then
  "$BIN" train --config configs/world/understanding.toml --set "data.seed=$SEED" --out "$OUT/understanding"
fi
for f in "${files[@]}"; do
  name=$(basename "$f" .toml)
  if [ -f "$OUT/$name/results.json" ]; then echo "skip $name (done)"; continue; fi
  rm -rf "$OUT/$name"
  # shellcheck disable=SC2086
  "$BIN" demo --experiment "$f" --mllm "$OUT/understanding/model" --seed "$SEED" --out "$OUT/$name" $EXTRA
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
rows = []
for r in sorted(out.glob("*/results.json")):
    j = json.loads(r.read_text())
    o = j["overall"]
    # The stage keys name what each stage trained on ("stage 1 (image-only)", "stage 2 (pairs)", ...).
    k1 = next(k for k in o if k.startswith("stage 1"))
    k2 = next(k for k in o if k.startswith("stage 2"))
    s2 = j["shapes_eval"][k2]["categories"]
    cats = [f'{s2.get(t, {}).get("score", float("nan")):.3f}' for t in tags]
    data = " → ".join(k.split("(", 1)[1].rstrip(")") for k in (k1, k2))  # "stage 1 (image-only)" -> "image-only"
    rows.append(f'| {r.parent.name} | {data} | ' + " | ".join(cats) + f' | **{o[k2]:.3f}** | {o[k1]:.3f} '
                f'| {o["untrained"]:.3f} | {j["timings"]["total_s"]:.0f} |')
head = "| experiment | data | " + " | ".join(tags) + " | stage 2 overall | stage 1 overall | untrained | seconds |"
sep = "|" + "---|" * (len(tags) + 6)
(out / "table.md").write_text("\n".join([head, sep] + rows) + "\n")
print((out / "table.md").read_text())
PY
