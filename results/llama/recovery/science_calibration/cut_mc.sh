#!/bin/bash
# The default's cut before tuning (configs/smollm2/alpaca.yaml, seed 42, no tuning: train.steps=0) calibrated on
# three sources, each export scored on the four multiple-choice tasks (500 items each, ARC-Challenge's 299) and on
# the held-out Alpaca loss. One thread, so that it can run beside a training run. From the repository root:
#   bash results/llama/recovery/science_calibration/cut_mc.sh runs/science_cut
set -euo pipefail
OUT=${1:?usage: cut_mc.sh OUT_DIR}
HERE=results/llama/recovery/science_calibration
declare -A FILES=([alpaca]="" [option]="$HERE/science.jsonl" [support]="$HERE/sciq_support.jsonl")
for name in alpaca option support; do
  extra=()
  [ -n "${FILES[$name]}" ] && extra=("prune.calibration_file=${FILES[$name]}")
  OMP_NUM_THREADS=1 python -m aptune train --no-latency --config configs/smollm2/alpaca.yaml model.dtype=float32 \
      train.steps=0 train.threads=1 "${extra[@]}" output_dir=$OUT/$name train.overwrite=true
  OMP_NUM_THREADS=1 python -m aptune eval --model $OUT/$name/export --task arc-easy,arc-challenge,sciq,mmlu \
      --max-samples 500 --threads 1 --no-progress --output $OUT/$name/mc.json
done
