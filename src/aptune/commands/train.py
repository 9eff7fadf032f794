"""``aptune train --config FILE [key=value ...]``: run APT (or an ablation) from a YAML config.

After training, the exported (merged, pruned) model is timed against the dense pretrained model, side by
side (aptune.bench protocol), and the summary is printed and saved to ``<output_dir>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

NAME = "train"
HELP = "adaptive pruning and tuning from a YAML config with dotted key=value overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a YAML file, or a shipped config by name (minilm/sst2; `aptune configs` lists them); defaults are used without one")
    parser.add_argument("--no-latency", action="store_true", help="skip timing the export against the dense model")
    parser.add_argument("overrides", nargs="*",
                        help="dotted overrides, before or after the flags, e.g. prune.density=0.5 train.steps=200")


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from aptune.bench import compare_latency
    from aptune.bench.memory import breakdown_line
    from aptune.config import load_config
    from aptune.models import load_model
    from aptune.train import train

    config = load_config(args.config, args.overrides)
    command = ["aptune", "train", *(["--config", args.config] if args.config else []), *args.overrides]
    if config.peer.method != "none":
        from aptune.peers import train_peer

        summary = train_peer(config)
    else:
        summary = train(config, command=shlex.join(command))
    if "stopped_at" in summary or not PartialState(cpu=not torch.cuda.is_available()).is_main_process:
        return 0
    if not args.no_latency:
        dense = load_model(config.model.name, head=config.model.head, num_labels=summary["num_labels"])
        exported = load_model(summary["export"], head=config.model.head)
        timing = compare_latency({"dense": dense, "export": exported}, batch_size=32, seq_len=128, repeats=5)
        summary["latency_b32_s128"] = {name: r.as_dict() for name, r in timing.items()}
        summary["speedup"] = timing["dense"].median_s / timing["export"].median_s
        Path(config.output_dir, "summary.json").write_text(json.dumps(summary, indent=1))
    final = summary["final"]
    metric = summary["primary_metric"]
    print(f"\n== {config.output_dir}: {summary['task']} ==")
    print(f"dev {metric}: final {final[metric]:.4f}, best after the last pruning step {summary['best_after_pruning']:.4f}")
    print(f"kept parameters: {summary['params']:,} of {summary['original_params']:,} (density {summary['density']:.3f})")
    print(f"training time: {summary['train_time_s'] / 60:.1f} min; peak memory (RSS): {summary['peak_rss_bytes'] / 2**30:.2f} GiB")
    breakdown = summary.get("memory_breakdown")
    if breakdown:
        for name in ("peak", "busiest"):
            print("  " + breakdown_line("highest RSS" if name == "peak" else "most heap in use", breakdown[name]))
    if "speedup" in summary:
        lat = summary["latency_b32_s128"]
        print(f"inference (batch 32, seq 128, median): dense {lat['dense']['median_s'] * 1e3:.0f} ms, export "
              f"{lat['export']['median_s'] * 1e3:.0f} ms ({summary['speedup']:.2f}x)")
    print(f"export: {summary['export']}")
    return 0
