"""Side-by-side CPU latency of encoder exports in PyTorch and in ONNX Runtime (float32, and dynamic int8).

Every model is exported to ONNX (``aptune.export.onnx``, which checks the graph against PyTorch first), then all
runners (model x runtime) are timed interleaved in one process, pass by pass, on the same random token ids
(no padding) at each batch size; median and p90 of ``--repeats`` passes after ``--warmup``. A model given by
name (``minilm``) is first exported dense (all blocks kept) so that both sides go through the same path.

    python benchmarks/onnx_latency.py dense=minilm pruned=runs/minilm-sst2-apt/export --int8 \\
        --json results/onnx_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aptune.commands.export import export_or_dense
from aptune.export.onnx import export_onnx, inference_session
from aptune.models import load_model
from aptune.provenance import meta_info


def runners(name: str, export: Path, scratch: Path, int8: bool, threads: int) -> dict:
    """``{label: (call, export)}``: PyTorch, ONNX Runtime float32 and (with ``int8``) int8, for one model."""
    model = load_model(export, head="sequence-classification").eval()
    report = export_onnx(export, scratch / f"{name}-onnx", quantize=int8)
    found = {f"{name} / torch": lambda batch: _torch_pass(model, batch)}
    for label, key in (("onnxruntime", "onnx"), ("onnxruntime int8", "int8")):
        if key in report:
            session = inference_session(Path(report[key]), threads)
            found[f"{name} / {label}"] = lambda batch, s=session: s.run(["logits"], batch)
    params = sum(p.numel() for p in model.parameters())
    return {label: (call, params, model.config.vocab_size) for label, call in found.items()}


def _torch_pass(model, batch: dict) -> None:
    with torch.inference_mode():
        model(**{k: torch.from_numpy(v) for k, v in batch.items()})


def time_interleaved(calls: dict, batch_size: int, seq_len: int, vocab: int, warmup: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab - 1, size=(batch_size, seq_len), dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    times = {label: [] for label in calls}
    for round_ in range(warmup + repeats):
        for label, (call, _, _) in calls.items():
            start = time.perf_counter()
            call(batch)
            if round_ >= warmup:
                times[label].append(time.perf_counter() - start)
    return {label: {"median_ms": 1e3 * statistics.median(t), "p90_ms": 1e3 * sorted(t)[int(0.9 * (len(t) - 1))],
                    "params": calls[label][1]} for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=PATH pairs: an export, a run folder or a model name")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true", help="also time ONNX Runtime's dynamic int8 graphs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    provenance = meta_info()  # the commit as the measurement starts
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        calls = {}
        for pair in args.models:
            name, _, source = pair.partition("=")
            export = export_or_dense(source, Path(scratch), "sequence-classification")
            calls.update(runners(name, export, Path(scratch), args.int8, args.threads))
        vocab = min(c[2] for c in calls.values())
        results = {}
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            results[batch_size] = time_interleaved(calls, batch_size, args.seq_len, vocab, args.warmup, args.repeats)
            first = next(iter(results[batch_size].values()))["median_ms"]
            print(f"batch {batch_size} x {args.seq_len}, {args.threads} threads, median (p90) of {args.repeats}:")
            for label, r in results[batch_size].items():
                print(f"  {label:32s} {r['median_ms']:9.1f} ms ({r['p90_ms']:.1f})  {first / r['median_ms']:.2f}x "
                      f"the first")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "provenance": provenance,
                                         "results": results},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
