"""CPU inference latency of dense MiniLM vs MiniLM exported at 40% of its prunable parameters.

Both models are timed in one run, interleaved pass by pass (see aptune.bench.latency for the protocol),
and the exported model is the one reloaded from disk with plain transformers.

    python benchmarks/minilm_latency.py [--density 0.4] [--batch-size 32] [--seq-len 128] [--repeats 10]
"""

from __future__ import annotations

import argparse
import platform
import tempfile

import torch
import transformers

from aptune.bench import compare_latency
from aptune.model import AdapterConfig, APTModel
from aptune.models import load_model
from aptune.salience import build_scorer
from aptune.search import search_keep_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--round-to", type=int, default=8, help="kept FFN/hidden sizes rounded down to a multiple")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    apt = APTModel(load_model("minilm", head="sequence-classification", num_labels=2), AdapterConfig(rank=0))
    scorer = build_scorer("magnitude").attach(apt)
    scorer.update()
    keep = search_keep_set(scorer.scores(), apt.state, apt.counter, int(args.density * apt.original_params),
                           round_to=args.round_to)
    apt.state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)
    with tempfile.TemporaryDirectory() as folder:
        apt.export(folder)
        pruned = transformers.AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    dense = load_model("minilm", head="sequence-classification", num_labels=2)
    results = compare_latency({"dense": dense, "pruned": pruned}, args.batch_size, args.seq_len, repeats=args.repeats)
    d, p = results["dense"], results["pruned"]
    print(f"MiniLM CPU latency, batch {args.batch_size}, seq {args.seq_len}, {args.repeats} interleaved passes, "
          f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"prunable-parameter density of the export: {keep.params / apt.original_params:.3f} "
          f"({keep.params:,} of {apt.original_params:,}); all parameters {p.params:,} vs {d.params:,}")
    print("| model | params | median (ms) | p90 (ms) | sequences/s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r.params:,} | {r.median_s * 1e3:.1f} | {r.p90_s * 1e3:.1f} | {r.throughput:.1f} |")
    print(f"speed-up (dense median / pruned median): {d.median_s / p.median_s:.2f}x")


if __name__ == "__main__":
    main()
