#!/usr/bin/env bash
# The learning curve of a stage of an `iomm demo` run: ShapesEval of every complete checkpoint the stage kept, with
# the demo's evaluation protocol (the held-out prompts, the same seeds, 16 Euler steps, CFG 2 by default), so the last point
# equals the demo's own stage score. Run the demo with `--set finetune:train.keep_last=1000` (keep every checkpoint;
# 0 is refused) and a `checkpoint_every` of your choice, as `make demo-long` does (configs/world/demo-long.toml).
#
#   bash experiments/curve.sh RUN [STAGE=finetune] [THREADS=2]
#
# The protocol (seed, prompt set, images per prompt, sampling steps, CFG) is read from RUN/results.json's options, so
# it is the run's own; a run still in progress has none yet, and the demo's defaults are used (said on stderr).
#
# Each checkpoint's EMA weights become a model directory by resuming a copy of the stage at its own step count (the
# loop runs no step, then exports the EMA model as the end of training does), then `iomm generate` + `iomm eval
# shapes` score it. Writes RUN/curve-STAGE/step-N/{run/model,samples,shapes.json} and RUN/curve-STAGE.jsonl.
set -euo pipefail
RUN=${1:?usage: curve.sh RUN [STAGE] [THREADS]}
STAGE=${2:-finetune}
THREADS=${3:-2}
IOMM=${IOMM_BIN:-build/iomm}
SRC=$RUN/$STAGE
OUT=$RUN/curve-$STAGE
[[ -f $SRC/config.toml ]] || { echo "$SRC/config.toml missing: pass the folder of an iomm demo run" >&2; exit 2; }
if [[ -f $RUN/results.json ]]; then
  read -r SEED SET PER_PROMPT STEPS CFG < <(python3 -c "import json,sys; o=json.load(open(sys.argv[1]))['options']; \
print(o['seed'], o['prompts'], o['per_prompt'], o['eval_steps'], o['eval_cfg'])" "$RUN/results.json")
else
  SEED=0 SET=eval PER_PROMPT=2 STEPS=16 CFG=2
  echo "$RUN/results.json not written yet (the run is still going): using the demo's defaults (seed 0, eval," \
       "2 per prompt, 16 steps, CFG 2)" >&2
fi
PROMPTS=$RUN/world/prompts/$SET.jsonl
[[ -f $PROMPTS ]] || { echo "$PROMPTS missing: the run has no held-out prompt set" >&2; exit 2; }
mkdir -p "$OUT"
: > "$OUT.jsonl"
found=0
for ck in "$SRC"/checkpoints/step-*; do
  [[ -f $ck/COMPLETE ]] || { echo "skipping $ck: no COMPLETE marker (an interrupted save)" >&2; continue; }
  found=$((found + 1))
  name=$(basename "$ck")
  step=$((10#${name#step-}))
  dst=$OUT/$name
  if [[ ! -f $dst/shapes.json ]]; then
    rm -rf "$dst" && mkdir -p "$dst/run/checkpoints"
    cp -r "$ck" "$dst/run/checkpoints/"
    "$IOMM" train --config "$SRC/config.toml" --set "train.steps=$step" --set "train.threads=$THREADS" \
      --set train.sample_every=0 --out "$dst/run" --resume > "$dst/export.log" 2>&1 ||
      { echo "exporting $ck failed; see $dst/export.log" >&2; exit 1; }
    rm -rf "$dst/run/checkpoints"  # the model stays where it was written: its iomm.toml names the MLLM relative to it
    OMP_NUM_THREADS=$THREADS "$IOMM" generate --model "$dst/run/model" --prompts "$PROMPTS" --per-prompt "$PER_PROMPT" \
      --steps "$STEPS" --cfg "$CFG" --seed $((SEED + 7)) --batch 64 --out "$dst/samples" > "$dst/generate.log" 2>&1 ||
      { echo "generating with $dst/run/model failed; see $dst/generate.log" >&2; exit 1; }
    "$IOMM" eval shapes --images "$dst/samples" --out "$dst/shapes.json" --grid "$dst/grid.png" > /dev/null
  fi
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({'step': int(sys.argv[2]), \
'shapes_eval': d['overall'], 'categories': d['categories']}))" \
    "$dst/shapes.json" "$step" | tee -a "$OUT.jsonl"
done
[[ $found -gt 0 ]] || { echo "$SRC/checkpoints has no complete checkpoint" >&2; exit 1; }
