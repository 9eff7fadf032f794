#!/bin/bash
# Device call 1 of 3 (the longer tuning budget, ../README.md; its scratch folders, in a temporary folder when it ran, are
# under $WORK now): stash the first part of the SmolLM2 GGUF, and re-run from the clean tree the tiny
# CUDA trainings of results/llama/mc500/gpu_h200/README.md (run3: one_cut, schedule, dense_teacher), plus the
# refit (prune.refit) and aptune eval (multiple choice, greedy answers) on CUDA, which no GPU has run yet.
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"   # the repository root
# scratch space: $WORK (default runs/dev/work, under the repository root, git-ignored)
WORK=$(mkdir -p "${WORK:-runs/dev/work}" && cd "${WORK:-runs/dev/work}" && pwd)
mkdir -p $WORK/gg && cp runs/dev/a/p1 $WORK/gg/
export PYTHONPATH=src HF_HUB_OFFLINE=1 APTUNE_DATA=runs/dev/data1 TOKENIZERS_PARALLELISM=false
{ git rev-parse HEAD; git status --porcelain; nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"; } > $OUT/env.txt 2>&1
common="model.name=runs/dev/tiny-llama train.steps=12 train.eval_every=6 train.log_every=3 data.max_length=64
  data.max_train_samples=64 data.max_eval_samples=8 train.batch_size=4 prune.calibration_batches=2 prune.start_step=1
  train.overwrite=true"
run() { local name=$1; shift; python3 -m aptune train --config configs/smollm2/alpaca.yaml $common \
  output_dir=$WORK/run3/$name "$@" > $WORK/run3/run3_$name.log 2>&1; echo "$name rc $?" >> $OUT/env.txt; }
mkdir -p $WORK/run3
run one_cut & run schedule prune.before_tuning=false prune.num_steps=2 prune.end_fraction=0.75 &
run dense_teacher recover.teacher=dense & run refit prune.refit=true & wait
python3 -m aptune eval --model $WORK/run3/one_cut/export --task arc-easy --max-samples 8 --device ${DEVICE:-cuda} \
  --prompts configs/smollm2/prompts.txt --max-new-tokens 4 --output $WORK/run3/eval_cuda.json > $WORK/run3/eval_cuda.log 2>&1
echo "eval rc $?" >> $OUT/env.txt
for n in one_cut schedule dense_teacher refit; do cp $WORK/run3/$n/summary.json $WORK/run3/run3_${n}_summary.json; done
tar czf $OUT/run3.tgz -C $WORK/run3 $(cd $WORK/run3 && ls *.log *.json)
cat $OUT/env.txt; ls -l $WORK/gg
