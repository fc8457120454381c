#!/bin/bash
# One A/B pair of bench/probes/snapshot_memory.py (BENCHMARKS.md "Feed snapshot memory", second round): the
# calibration, then the base checkout (BASE, e.g. a `git worktree add` of main) and this checkout, in ORDER
# (ba: base first, ab: this checkout first), one torch thread, niced; each run appends to OUT.
# usage: BASE=/tmp/rank9-base bench/probes/ab_snapshot_memory.sh OUT.jsonl ba|ab N M S [upload]
cd "$(dirname "$0")/../.." || exit 1
out=$1; order=$2; N=$3; M=$4; S=$5; UP=${6:-}
run() {  # $1 = base | after
  echo "{\"calibration\": \"$(.venv/bin/python /work/wt/calib.py) $(date -u +%H:%M:%S)\", \"arm\": \"$1\"}" >> "$out"
  if [ "$1" = base ]; then
    PYTHONPATH=${BASE:?BASE: the base checkout} OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python \
      bench/probes/snapshot_memory.py "$N" "$M" "$S" "$out" $UP
  else
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/probes/snapshot_memory.py "$N" "$M" "$S" "$out" $UP
  fi
}
if [ "$order" = ba ]; then run base; run after; else run after; run base; fi
