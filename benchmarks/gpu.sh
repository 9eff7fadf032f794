#!/usr/bin/env bash
# One GPU check, under 10 minutes on one recent GPU: the main job on CUDA (model.dtype=auto: bfloat16 there),
# the training-step benchmark (aptune dense and pruned, PEFT LoRA, full fine-tuning; synchronised timings,
# torch.cuda.max_memory_allocated), and SmolLM2-135M cut to 70% and tuned in bfloat16. Writes OUT/gpu.json.
#
#   bash benchmarks/gpu.sh [OUT]        # OUT defaults to runs/gpu; needs aptune installed with a CUDA torch
#
# Every step's log is kept beside the JSON (OUT/*.log); a failed step stops the script with its log's tail.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: torch sees no CUDA device (torch $(python -c 'import torch; print(torch.__version__)')); run it" \
         "on a GPU machine with a CUDA build of torch" >&2
    exit 1
fi

step() {  # step NAME COMMAND...: run, time, keep the log
    local name=$1; shift
    local start=$SECONDS
    if ! "$@" > "$OUT/$name.log" 2>&1; then
        echo "gpu.sh: $name failed; the end of $OUT/$name.log:" >&2
        tail -20 "$OUT/$name.log" >&2
        exit 1
    fi
    echo "$name $((SECONDS - start))" >> "$OUT/wall_seconds.txt"
    echo "gpu.sh: $name done in $((SECONDS - start)) s"
}

rm -f "$OUT/wall_seconds.txt"
step main_job python -m aptune train --config configs/minilm/sst2.yaml output_dir="$OUT/minilm-sst2" \
    train.overwrite=true
step train_step python benchmarks/train_step.py --device cuda --steps 20 --warmup 3 --json "$OUT/train_step.json"
# alpaca_qv.yaml: the recipe of the float32 run the README compares it with (held-out loss 2.749 at step 300)
step smollm2_bf16 python -m aptune train --config configs/smollm2/alpaca_qv.yaml output_dir="$OUT/smollm2-bf16" \
    model.dtype=bfloat16 train.overwrite=true

python - "$OUT" > "$OUT/gpu.json" <<'EOF'
import json, subprocess, sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
summary = lambda run: json.loads((out / run / "summary.json").read_text())
keep = ("final", "params", "original_params", "density", "train_time_s", "memory", "cuda_max_memory_allocated")
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
print(json.dumps({
    "commit": commit, "git_dirty": dirty, "torch": torch.__version__, "cuda": torch.version.cuda,
    "gpu": torch.cuda.get_device_name(0),
    "wall_seconds": {name: int(s) for name, s in (l.split() for l in (out / "wall_seconds.txt").read_text().splitlines())},
    "main_job": {k: summary("minilm-sst2").get(k) for k in keep},
    "smollm2_bf16": {k: summary("smollm2-bf16").get(k) for k in keep},
    "train_step": json.loads((out / "train_step.json").read_text()),
}, indent=1))
EOF
echo "gpu.sh: numbers in $OUT/gpu.json"
