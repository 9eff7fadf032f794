#!/usr/bin/env bash
# The mc500 exports' architectures timed side by side on a GPU (aptune bench --device cuda), for a machine that
# the weights cannot be copied to: each export's skeleton (the export without model.safetensors) is rebuilt
# with random weights (benchmarks/random_weights.py), which leaves every shape, hence the latency, as it is.
#
#   bash benchmarks/gpu_export_latency.sh SKELETONS OUT
#
# SKELETONS holds one folder per model, named NN_name (the order of the table; the first is the reference);
# prepare it where the runs are with
#   for m in 01_lora_42=lora__alpaca__seed42 02_apt_recovery_42=apt_recovery__alpaca__seed42 ...; do
#     e=runs/mc500/runs/${m#*=}/train/export; mkdir -p SKELETONS/${m%%=*}
#     cp $e/config.json $e/aptune_structure.json $e/modeling_aptune.py SKELETONS/${m%%=*}/; done
# OUT gets one aptune bench JSON per setting (bfloat16 and float32, prefill at batch 8 x 256 as on the CPU and
# at 64 x 1024, greedy decoding at batch 1) and the printed tables in OUT/tables.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SKELETONS=$1
OUT=$2
MODELS=${MODELS_DIR:-/tmp/random_weight_exports}
mkdir -p "$OUT" "$MODELS"
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

python3 - <<'EOF' | tee "$OUT/tables.md"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF
args=()
for skeleton in "$SKELETONS"/*/; do
  name=$(basename "$skeleton"); name=${name#*_}
  python3 benchmarks/random_weights.py "$skeleton" "$MODELS/$name"
  args+=("$name=$MODELS/$name")
done

bench() {  # bench JSON_NAME OPTIONS...: one aptune bench process over every model, its table appended
  local json=$1; shift
  echo -e "\n### $json\n" >> "$OUT/tables.md"
  python3 -m aptune bench "${args[@]}" --head causal-lm --device cuda "$@" --json "$OUT/$json.json" \
    | grep -v '^written:' | tee -a "$OUT/tables.md"
}
bench bf16_b8x256 --dtype bfloat16 --batch-size 8 --seq-len 256 --repeats 50 --warmup 10 \
  --generate 1,64,128 --generate-repeats 5
bench bf16_b64x1024 --dtype bfloat16 --batch-size 64 --seq-len 1024 --repeats 20 --warmup 5
bench fp32_b8x256 --dtype float32 --batch-size 8 --seq-len 256 --repeats 50 --warmup 10
