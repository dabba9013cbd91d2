#!/usr/bin/env bash
# The stage-1 reconstruction proxy (issue 19): stage 1 only, then ShapesEval and PSNR of the held-out scenes
# redrawn from their own self-conditions (apps/recon_eval.h). A few minutes per design on one core, so two designs
# run side by side on the 2-core machine.
#
#   MLLM=runs/demo/understanding/model OUT=runs/proxy/base bash experiments/proxy.sh [--set pretrain:key=value ...]
#
# MLLM: an understanding model to reuse (train one with `iomm demo --stages 1 --out DIR` or take a demo's);
# STEPS (600), SEED (0), THREADS (1), IOMM (build/iomm). Extra arguments go to `iomm demo`.
# Result: OUT/results.json ("stage1_recon": ShapesEval overall and per category, colour IoU, PSNR), OUT/report.html.
# Colour IoU is the number to compare: PSNR and the reconstructions' ShapesEval do not separate a stage 1 that
# never saw its condition from a working one at this length (docs/tiny-world.md, fifth round).
set -euo pipefail
: "${MLLM:?set MLLM to an understanding model directory (RUN/model)}"
: "${OUT:?set OUT to the run directory}"
STEPS="${STEPS:-600}"
SEED="${SEED:-0}"
THREADS="${THREADS:-1}"
IOMM="${IOMM:-build/iomm}"
"$IOMM" demo --out "$OUT" --stages 1 --mllm "$MLLM" --seed "$SEED" --threads "$THREADS" \
  --set "pretrain:train.steps=$STEPS" --set "pretrain:train.sample_every=$STEPS" \
  --set "pretrain:train.checkpoint_every=$STEPS" "$@"
python3 - "$OUT/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["stage1_recon"]
print(f"{sys.argv[1]}: recon ShapesEval {s['shapes_eval_overall']:.3f}  colour IoU {s['color_iou']:.3f}  "
      f"PSNR {s['psnr_db']:.2f} dB  "
      f"pretrain {r['timings']['pretrain_s']:.0f} s")
PY
