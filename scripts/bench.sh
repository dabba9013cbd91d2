#!/usr/bin/env bash
# iomm against its PyTorch peer (bench/peer/), in one sitting, and the result as a dated section of docs/benchmarks.md.
#
#   scripts/bench.sh [--quick] [--rounds K] [--configs tiny,small-real] [--threads N] [--compile-rounds C]
#                    [--batch B] [--no-append] [--keep DIR]
#
# For each config (bench/configs/<name>.toml):
#   1. random user checkpoints in the ecosystem's formats (bench/peer/make_checkpoints.py --preset <name>);
#   2. `iomm bench train --dump D` (2 steps), then `peer.py train --check` on D: the same losses, or the sitting
#      stops (a benchmark of two different computations is worthless); the same for generate (the same images);
#   3. K rounds, each iomm then the eager peer (then the torch.compile peer in the first C rounds: every run
#      compiles again, minutes on 2 cores), so that a drift in the machine's load hits both sides alike;
#   4. bench/peer/bench_report.py appends the table (medians ± spread, ratios, peak memory) and the agreement line.
# --quick: 1 round, fewer steps, no torch.compile (a smoke run of the whole pipeline; not for the record).
# --batch B: train.batch_size for every config (default: each config's). --threads: torch threads of both sides.
#
# Environment: IOMM_BIN (default build/iomm), PYTHON (default python3), IOMM_BENCH_CONFIGS (default bench/configs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IOMM=${IOMM_BIN:-$ROOT/build/iomm}
PY=${PYTHON:-python3}
PEER=$ROOT/bench/peer
CONFIG_DIR=${IOMM_BENCH_CONFIGS:-$ROOT/bench/configs}

QUICK=0 ROUNDS=3 CONFIGS=tiny,small-real THREADS=$(nproc) COMPILE_ROUNDS=1 APPEND=1 KEEP="" BATCH=""
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --configs) CONFIGS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --batch) BATCH=$2; shift ;;
    --compile-rounds) COMPILE_ROUNDS=$2; shift ;;
    --no-append) APPEND=0 ;;
    --keep) KEEP=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then ROUNDS=1 COMPILE_ROUNDS=0; fi
[[ -x $IOMM ]] || { echo "bench.sh: $IOMM not found; run make build or set IOMM_BIN" >&2; exit 2; }
"$IOMM" bench --help >/dev/null 2>&1 || { echo "bench.sh: $IOMM has no bench command; rebuild" >&2; exit 2; }

WORK=${KEEP:-$(mktemp -d /tmp/iomm-bench.XXXXXX)}
mkdir -p "$WORK"
[[ -n $KEEP ]] || trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results
echo "bench.sh: work directory $WORK, $THREADS threads, $ROUNDS rounds, configs $CONFIGS"
# A busy machine ruins the ratio: with as many torch threads as cores, a descheduled OpenMP worker stalls every
# parallel op (measured here during a compile: the eager peer's generation 80x slower, iomm's hardly at all).
LOAD=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
  echo "bench.sh: WARNING: load average $LOAD; the numbers of a busy machine are not worth recording" >&2
fi

# Steps per run and generation sizes per config: the small-real generator (IOMM-B width at 256²) takes seconds per
# NFE on 2 cores, so its runs are short; the tiny world's are long enough for a stable median.
sizes() {  # name -> TRAIN_WARMUP TRAIN_STEPS GEN_IMAGES GEN_STEPS GEN_CALLS
  case "$1:$QUICK" in
    tiny:0) echo 2 20 4 16 5 ;;
    tiny:1) echo 1 3 2 4 1 ;;
    small-real:0) echo 1 2 1 4 2 ;;
    small-real:1) echo 1 1 1 2 1 ;;
    iomm-b:0) echo 3 20 4 28 5 ;;
    *) echo 1 3 2 4 2 ;;
  esac
}

# PEER_DTYPE: empty for the checks (the dump's float32), then the dtype iomm timed in (its result's "dtype").
PEER_DTYPE=""
peer() { "$PY" "$PEER/peer.py" "$@" ${PEER_DTYPE:+--dtype "$PEER_DTYPE"}; }

run_config() {
  local name=$1 cfg=$CONFIG_DIR/$1.toml out=$RESULTS/$1 ck=$WORK/$1/checkpoints dump=$WORK/$1/dump
  [[ -f $cfg ]] || { echo "bench.sh: $cfg not found" >&2; exit 2; }
  mkdir -p "$out" "$dump"
  read -r tw ts gi gs gc < <(sizes "$name")
  echo "== $name: checkpoints"
  "$PY" "$PEER/make_checkpoints.py" --preset "$name" --out "$ck" >&2
  local sets=(--set "model.mllm=$ck/mllm")
  [[ -d $ck/vae ]] && sets+=(--set "model.autoencoder=$ck/vae")
  [[ -n $BATCH ]] && sets+=(--set "train.batch_size=$BATCH")
  local train=("$IOMM" bench train --config "$cfg" "${sets[@]}" --threads "$THREADS" --json)
  local gen=("$IOMM" bench generate --config "$cfg" "${sets[@]}" --threads "$THREADS" --images "$gi"
             --sampler-steps "$gs" --json)

  # The check: the first step's loss and the one after an AdamW update (the timing rounds replay the same batch),
  # in float32 whatever the config's dtype (bf16 rounding would hide a wrong computation); the rounds then time both
  # sides in the config's dtype.
  echo "== $name: check (iomm's dump -> peer --check)"
  PEER_DTYPE=""
  "${train[@]}" --set model.dtype=float32 --warmup 0 --steps 2 --dump "$dump/train" >"$out/dump-train.json"
  peer train --dir "$dump/train" --threads "$THREADS" --check --json >"$out/check-train.json" \
    || { echo "bench.sh: $name: the peer's training losses differ from iomm's; no timing recorded" >&2; exit 1; }
  "${gen[@]}" --set model.dtype=float32 --warmup 0 --steps 1 --dump "$dump/gen" >"$out/dump-generate.json"
  peer generate --dir "$dump/gen" --threads "$THREADS" --warmup 0 --rounds 1 --check --json \
    >"$out/check-generate.json" \
    || { echo "bench.sh: $name: the peer's images differ from iomm's; no timing recorded" >&2; exit 1; }

  local compile_ok=1
  for ((r = 1; r <= ROUNDS; r++)); do
    echo "== $name: round $r/$ROUNDS"
    "${train[@]}" --warmup "$tw" --steps "$ts" >"$out/round-$r-iomm-train.json"
    PEER_DTYPE=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["dtype"])' "$out/round-$r-iomm-train.json")
    peer train --dir "$dump/train" --threads "$THREADS" --warmup "$tw" --steps "$ts" --json \
      >"$out/round-$r-peer-eager-train.json"
    "${gen[@]}" --warmup 1 --steps "$gc" >"$out/round-$r-iomm-generate.json"
    peer generate --dir "$dump/gen" --threads "$THREADS" --warmup 1 --rounds "$gc" --json \
      >"$out/round-$r-peer-eager-generate.json"
    if ((compile_ok && r <= COMPILE_ROUNDS)); then
      local rc=0
      peer train --dir "$dump/train" --threads "$THREADS" --warmup "$tw" --steps "$ts" --compile --json \
        >"$out/round-$r-peer-compile-train.json" || rc=$?
      if ((rc == 0)); then
        peer generate --dir "$dump/gen" --threads "$THREADS" --warmup 1 --rounds "$gc" --compile --json \
          >"$out/round-$r-peer-compile-generate.json" || rc=$?
      fi
      if ((rc == 3)); then
        echo "bench.sh: torch.compile does not work here (see above); the compile peer is left out" >&2
        rm -f "$out"/round-*-peer-compile-*.json
        compile_ok=0
      elif ((rc != 0)); then
        exit "$rc"
      fi
    fi
  done
}

IFS=, read -ra names <<<"$CONFIGS"
for n in "${names[@]}"; do run_config "$n"; done

report=("$PY" "$PEER/bench_report.py" "$RESULTS" --note "Load average (1 min) before the sitting: $LOAD.")
if ((APPEND && !QUICK)); then report+=(--append "$ROOT/docs/benchmarks.md"); fi
"${report[@]}"
if ((APPEND && !QUICK)); then echo "bench.sh: appended to docs/benchmarks.md"; fi
if [[ -n $KEEP ]]; then echo "bench.sh: raw results in $RESULTS"; fi
