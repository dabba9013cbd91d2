#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, a configuration of their own: clang, ASan + UBSan, no libtorch) and runs each
# one over its seed corpus, then writes a summary: runs, seconds, corpus size, findings.
#
#   scripts/fuzz.sh                     every target, 100,000 runs each (the long run of docs/reliability.md)
#   scripts/fuzz.sh --runs 20000 image_decode webdataset_tar
#   scripts/fuzz.sh --time 600          every target for 10 minutes
#   scripts/fuzz.sh --short             CI: 2,000 runs each with a fixed seed (tests/conformance/test_fuzz.py)
#
# Exit status: 0 when no target found anything, 1 when one did (the inputs are in BUILD/findings/<target>/; keep
# each as fuzz/corpus/<target>/crash-<what> with a unit test once fixed), 77 when clang or its libFuzzer runtime is
# missing (apt-get install clang-14 libclang-rt-14-dev). BUILD defaults to build-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-fuzz}
RUNS=100000
TIME=0
SEED=0
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME=$2; RUNS=-1; shift 2 ;;
    --short) RUNS=2000; SEED=1; shift ;;
    *) echo "fuzz.sh: unknown option $1 (see the comment at the top of scripts/fuzz.sh)" >&2; exit 2 ;;
  esac
done

CXX=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14 || true)}
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
if [[ -z $CXX ]] || ! "$CXX" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2> "$probe/err"; then
  echo "fuzz.sh: SKIP: clang++ with the libFuzzer runtime is not available (${CXX:-no clang++ on PATH}:" \
       "$(head -c 300 "$probe/err" 2>/dev/null)); install it with apt-get install clang-14 libclang-rt-14-dev" >&2
  exit 77
fi

start=$(date +%s)
if [[ ! -f $BUILD/build.ninja ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DIOMM_FUZZ=ON -DCMAKE_CXX_COMPILER="$CXX" > /dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" > "$BUILD/build.log" 2>&1 || { tail -30 "$BUILD/build.log"; exit 1; }
build_s=$(( $(date +%s) - start ))
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < "$BUILD/fuzz_targets.txt"

# Per-iteration files go to tmpfs; one scratch root per invocation, removed at the end (a crashing target leaves its
# directory behind otherwise).
export IOMM_FUZZ_SCRATCH
IOMM_FUZZ_SCRATCH=$(mktemp -d /dev/shm/iomm-fuzz-run.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$probe" "$IOMM_FUZZ_SCRATCH"' EXIT

summary="$BUILD/fuzz-summary.md"
{
  echo "| target | runs | seconds | exec/s | corpus | findings |"
  echo "|---|---:|---:|---:|---:|---|"
} > "$summary"
found=0
for t in "${targets[@]}"; do
  work="$BUILD/corpus/$t" findings="$BUILD/findings/$t" log="$BUILD/logs/$t.log"
  [[ $SEED -ne 0 ]] && rm -rf "$work"  # --short: the same inputs on every run, whatever ran before
  mkdir -p "$work" "$findings" "$(dirname "$log")"
  opts=(-runs="$RUNS" -seed="$SEED" -timeout=30 -rss_limit_mb=2560 -print_final_stats=1
        -artifact_prefix="$findings/")
  [[ $TIME -gt 0 ]] && opts+=(-max_total_time="$TIME")
  t0=$(date +%s.%N)
  rc=0
  # The first corpus dir is written to (new inputs); the committed seeds are read only.
  "$BUILD/fuzz_$t" "${opts[@]}" "$work" "fuzz/corpus/$t" > "$log" 2>&1 || rc=$?
  secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(ls "$work" | wc -l)
  what="none"
  if [[ $rc -ne 0 ]]; then
    found=1
    what="rc $rc: $(grep -m1 -E 'ERROR|runtime error|what\(\)' "$log" | cut -c1-120) ($(ls "$findings" | tr '\n' ' '))"
  fi
  echo "| $t | ${runs:-?} | $secs | ${rate:-?} | $corpus | $what |" | tee -a "$summary"
done
echo "fuzz.sh: build ${build_s} s, total $(( $(date +%s) - start )) s; summary in $summary, logs in $BUILD/logs/"
exit $found
