"""``aptune train --config FILE [key=value ...]``: run APT (or an ablation) from a YAML config."""

from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "adaptive pruning and tuning from a YAML config with dotted key=value overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (see configs/); defaults are used without one")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. prune.density=0.5 train.steps=200")


def run(args: argparse.Namespace) -> int:
    from aptune.config import load_config
    from aptune.train import train

    config = load_config(args.config, args.overrides)
    summary = train(config)
    print(json.dumps({k: summary[k] for k in ("task", "final", "best_after_pruning", "density", "train_time_s")},
                     indent=1))
    return 0
