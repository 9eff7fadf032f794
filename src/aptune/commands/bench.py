"""``aptune bench``: inference latency of several models or aptune exports, side by side in one process.

Examples::

    aptune bench dense=minilm export=runs/minilm-sst2-apt/export --threads 2 --json runs/bench/minilm.json
    aptune bench lora=runs/a/export apt=runs/b/export --head causal-lm --batch-size 8 --seq-len 256 \\
        --generate 1,64,64
    aptune bench lora=runs/a/export apt=runs/b/export --head causal-lm --device cuda --dtype bfloat16

All models are loaded first, then timed interleaved pass by pass on batches of the same shape, so that
machine noise hits them alike (:mod:`aptune.bench.latency` for the protocol). The table gives median and
p90 latency, throughput, the median's ratio to the first model's, and each model's parameter count and
weight bytes. With ``--head causal-lm`` a pass is the prefill (language-model head on the last position
only, as ``generate`` does); ``--generate`` adds greedy decoding with the KV cache. On a GPU (``--device``)
each pass is bracketed by ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

NAME = "bench"
HELP = "time several models or aptune exports side by side (interleaved): median, p90, ratio, size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="[NAME=]MODEL",
                        help="models to compare: short name (minilm, smollm2-135m), folder, aptune export or hub "
                             "id, optionally named (dense=minilm); the first is the reference of the ratios")
    parser.add_argument("--head", default="sequence-classification", help="task head to load",
                        choices=["base", "sequence-classification", "causal-lm", "seq2seq-lm"])
    parser.add_argument("--num-labels", type=int,
                        help="classes of a sequence-classification head (default: the model's own config)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes per model before the timed ones")
    parser.add_argument("--generate", metavar="BATCH,PROMPT_LEN,NEW_TOKENS",
                        help="also time greedy decoding (causal LMs), e.g. 1,64,64")
    parser.add_argument("--generate-repeats", type=int, default=3, help="timed generate() calls per model")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="weights dtype of every model")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the settings and numbers to FILE")


def named_models(specs: list[str]) -> dict[str, str]:
    """``["dense=minilm", "runs/x/export"]`` -> ``{"dense": "minilm", "runs/x/export": "runs/x/export"}``."""
    models: dict[str, str] = {}
    for spec in specs:
        name, _, source = spec.partition("=") if "=" in spec else (spec, "", spec)
        if not name or not source:
            raise ValueError(f"model {spec!r}: expected NAME=MODEL (e.g. dense=minilm) or MODEL")
        if name in models:
            raise ValueError(f"model name {name!r} is given twice; name each model once (NAME=MODEL)")
        models[name] = source
    return models


def generation_shape(text: str) -> tuple[int, int, int]:
    """``"1,64,64"`` -> (batch size, prompt length, new tokens)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--generate {text!r}: expected three positive integers BATCH,PROMPT_LEN,NEW_TOKENS")
    return shape


def check_counts(args: argparse.Namespace) -> None:
    for option in ("batch_size", "seq_len", "repeats", "generate_repeats"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be 0 or more, got {args.warmup}")


def weight_bytes(model) -> int:
    """Bytes of the model's parameters (tied weights once), as they sit in memory."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run(args: argparse.Namespace) -> int:
    import torch

    from aptune.bench import compare_generation, compare_latency
    from aptune.models import load_model, resolve_device

    sources = named_models(args.models)
    check_counts(args)
    shape = generation_shape(args.generate) if args.generate else None
    if args.threads:
        torch.set_num_threads(args.threads)
    num_labels = args.num_labels if args.head == "sequence-classification" else None
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    models = {name: load_model(source, head=args.head, num_labels=num_labels, dtype=dtype).to(device)
              for name, source in sources.items()}
    # prefill of a causal LM: the language-model head on the last position only, as generate() does
    forward_kwargs = {"logits_to_keep": 1} if args.head == "causal-lm" else {}
    latency = compare_latency(models, args.batch_size, args.seq_len, warmup=args.warmup, repeats=args.repeats,
                              **forward_kwargs)
    decoding = None
    if shape:  # one warm-up call at most: a call is already many decoding steps
        decoding = compare_generation(models, *shape, warmup=min(args.warmup, 1), repeats=args.generate_repeats)
    report = bench_report(args, sources, models, latency, decoding)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"written: {args.json}")
    return 0


def bench_report(args: argparse.Namespace, sources: dict, models: dict, latency: dict, decoding: dict | None) -> dict:
    """Settings, machine and per-model numbers, as printed and written to ``--json``."""
    import torch
    import transformers

    first = next(iter(models))
    rows = {}
    for name, model in models.items():
        timing = latency[name]
        row = {"source": sources[name], "params": timing.params, "weight_bytes": weight_bytes(model),
               "latency": timing.as_dict(), "median_ratio_to_first": timing.median_s / latency[first].median_s}
        if decoding:
            row["generation"] = decoding[name].as_dict()
            row["tokens_per_s_ratio_to_first"] = decoding[name].tokens_per_s / decoding[first].tokens_per_s
        rows[name] = row
    keys = ("head", "num_labels", "batch_size", "seq_len", "repeats", "warmup", "generate", "generate_repeats",
            "dtype")
    device = next(models[first].parameters()).device
    machine = {"threads": torch.get_num_threads(), "torch": torch.__version__,
               "transformers": transformers.__version__, "cpu": platform.processor() or platform.machine(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "python": platform.python_version()}
    return {"settings": {key: getattr(args, key) for key in keys}, "machine": machine, "reference": first,
            "models": rows}


def format_report(report: dict) -> str:
    """Markdown tables of :func:`bench_report`'s numbers."""
    settings, machine, first = report["settings"], report["machine"], report["reference"]
    where = machine["device"]
    where = f"{machine['cpu']}, {machine['threads']} thread(s)" if where == "cpu" else where
    lines = [f"torch {machine['torch']}, {where}, {settings['dtype']}; batch "
             f"{settings['batch_size']} x {settings['seq_len']}, {settings['repeats']} interleaved passes after "
             f"{settings['warmup']} warm-up passes",
             f"| model | params | weight MiB | median (ms) | p90 (ms) | sequences/s | median / {first} |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["models"].items():
        timing = row["latency"]
        lines.append(f"| {name} | {row['params']:,} | {row['weight_bytes'] / 2**20:.1f} "
                     f"| {timing['median_s'] * 1e3:.1f} | {timing['p90_s'] * 1e3:.1f} | {timing['throughput']:.1f} "
                     f"| {row['median_ratio_to_first']:.2f} |")
    if settings["generate"]:
        lines += ["", f"greedy decoding (batch, prompt, new tokens: {settings['generate']}; "
                      f"{settings['generate_repeats']} interleaved calls)",
                  f"| model | median call (s) | tokens/s | tokens/s / {first} |", "|---|---:|---:|---:|"]
        for name, row in report["models"].items():
            generation = row["generation"]
            lines.append(f"| {name} | {generation['median_s']:.2f} | {generation['tokens_per_s']:.1f} "
                         f"| {row['tokens_per_s_ratio_to_first']:.2f} |")
    return "\n".join(lines)
