#!/usr/bin/env bash
# iomm's streaming loader against its Python peer (webdataset + Pillow + torch DataLoader), in one sitting, and the
# result as a dated section of docs/benchmarks.md.
#
#   scripts/bench_loader.sh [--count N] [--rounds K] [--formats jpg,webp] [--workers 1,2] [--resolution R]
#                           [--no-append] [--keep DIR] [--jpeg-draft]
#
# 1. bench/loader/make_loader_data.py writes N photo-like 512² images per format as WebDataset shards;
# 2. K rounds; in each, for each worker count, `iomm data scan` then the peer read one epoch (decode, RGB, shorter
#    side to R bicubic, centre crop, uint8 CHW tensor, caption), alternating so a drift in load hits both alike;
# 3. bench/loader/loader_report.py prints medians and the ratio, and appends them to docs/benchmarks.md.
# --jpeg-draft: both sides decode JPEGs at reduced scale first (iomm --jpeg-draft, Pillow's Image.draft).
# Run it on a quiet machine: both sides use every core they are given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IOMM=${IOMM_BIN:-$ROOT/build/iomm}
PY=${PYTHON:-python3}
COUNT=2000 ROUNDS=3 FORMATS=jpg,webp WORKERS=1,2 RES=256 APPEND=1 KEEP="" DRAFT=()
while (($#)); do
  case "$1" in
    --count) COUNT=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --formats) FORMATS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --resolution) RES=$2; shift ;;
    --no-append) APPEND=0 ;;
    --keep) KEEP=$2; shift ;;
    --jpeg-draft) DRAFT=(--jpeg-draft) ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench_loader.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
WORK=${KEEP:-$(mktemp -d)}
[ -n "$KEEP" ] || trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
for fmt in ${FORMATS//,/ }; do
  [ -d "$WORK/$fmt" ] || $PY bench/loader/make_loader_data.py --out "$WORK/$fmt" --count "$COUNT" --format "$fmt"
done
for round in $(seq 1 "$ROUNDS"); do
  for fmt in ${FORMATS//,/ }; do
    for w in ${WORKERS//,/ }; do
      r=$("$IOMM" data scan --data "$WORK/$fmt" --resolution "$RES" --workers "$w" --shuffle-buffer 1 --json "${DRAFT[@]}")
      echo "{\"impl\": \"iomm\", \"format\": \"$fmt\", \"workers\": $w, \"round\": $round, \"result\": $r}" >> "$RESULTS"
      r=$($PY bench/loader/loader_peer.py --data "$WORK/$fmt" --resolution "$RES" --workers "$w" ${DRAFT:+--draft})
      echo "{\"impl\": \"peer\", \"format\": \"$fmt\", \"workers\": $w, \"round\": $round, \"result\": $r}" >> "$RESULTS"
      echo "round $round $fmt workers=$w: $(tail -n 2 "$RESULTS" | $PY -c 'import sys, json
rows = [json.loads(l) for l in sys.stdin]
print(" vs ".join("%s %.0f img/s" % (r["impl"], r["result"]["images_per_s"]) for r in rows))')"
    done
  done
done
ARGS=(--results "$RESULTS" --count "$COUNT" --resolution "$RES")
[ $APPEND -eq 1 ] && ARGS+=(--append docs/benchmarks.md)
$PY bench/loader/loader_report.py "${ARGS[@]}"
