"""Side-by-side CPU latency of exported causal LMs: prefill and greedy decoding, interleaved in one process.

The comparison runner times each export in its own process, minutes apart, on a shared machine; this script
loads several exports at once and alternates between them pass by pass, so that machine noise hits all of
them alike and the ratios hold (aptune.bench.latency for the protocol).

    R=runs/ablations/compare-cpu/runs
    python benchmarks/export_latency.py lora=$R/lora__alpaca__seed42/train/export \
        apt=$R/apt__alpaca__seed42/train/export --out results/llama/latency_side_by_side.json

It is ``aptune bench`` with this benchmark's settings (causal-LM head, prefill batch 8 x 256, 5 passes after
one warm-up, decoding of 64 tokens after 64 at batch 1); any option of ``aptune bench`` given here overrides
them, and ``--out FILE`` stands for ``--json FILE``. Prefill: one forward pass over a batch of random tokens
with the language-model head on the last position only (``logits_to_keep=1``, as ``generate`` does).
Decoding: greedy ``generate`` of a fixed number of new tokens with the KV cache, end-of-sequence held back.
"""

from __future__ import annotations

import sys

from aptune.cli import main as aptune_main

SETTINGS = ["--head", "causal-lm", "--batch-size", "8", "--seq-len", "256", "--repeats", "5", "--warmup", "1",
            "--generate", "1,64,64", "--generate-repeats", "3"]


def bench_arguments(argv: list[str]) -> list[str]:
    """This script's command line as ``aptune bench``'s: its settings first (later options win), --out -> --json."""
    renamed = ["--json" if arg == "--out" else arg.replace("--out=", "--json=", 1) for arg in argv]
    return ["bench", *SETTINGS, *renamed]


if __name__ == "__main__":
    sys.exit(aptune_main(bench_arguments(sys.argv[1:])))
