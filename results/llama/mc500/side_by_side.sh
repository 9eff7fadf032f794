#!/bin/bash
# Profile mc500 of configs/smollm2/compare.yaml: every export of the plan timed side by side in one process (aptune bench, models
# interleaved pass by pass), after the runs and alone on the machine. The runs folder defaults to runs/mc500;
# the table goes to stdout (side_by_side.md here), the numbers to $OUT (default $RUNS/side_by_side_all_b8.json;
# side_by_side.json here). Ran at 790257e with RUNS=runs/mc500 (as an absolute path) and the defaults below.
# VARIANTS names the runs to time; REFERENCE (NAME=MODEL), when set, comes first and is the ratios' reference
# (otherwise the first export found is). RUNS may name several runs folders (space-separated): each run's export
# is taken from the first folder that has it, and OUT's default is in the first.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs/mc500}
VARIANTS=${VARIANTS:-lora base lora_recovery lora_prune apt apt_no_kurtosis apt_round8 apt_recovery}
OUT=${OUT:-${RUNS%% *}/side_by_side_all_b8.json}
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
args=(${REFERENCE:+"$REFERENCE"})
for v in $VARIANTS; do
  for s in 42 43 44; do
    for r in $RUNS; do
      d=$r/runs/${v}__alpaca__seed$s/train/export
      if [ -d "$d" ]; then args+=("${v}_$s=$d"); break; fi
    done
  done
done
echo "${#args[@]} models"
python -m aptune bench "${args[@]}" --head causal-lm --batch-size 8 --seq-len 256 --repeats 5 --warmup 1 \
  --generate 1,64,64 --generate-repeats 3 --threads 2 --json "$OUT"
