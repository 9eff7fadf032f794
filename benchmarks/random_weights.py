"""An aptune export's architecture with random weights, for timing it where its weights cannot go.

Latency depends on a model's shapes, not on its weight values: this script reads an export's skeleton (the
export without ``model.safetensors``: ``config.json``, ``aptune_structure.json``, ``modeling_aptune.py``), builds
the model from its config (every pruned width as the export has it) with seeded random weights and saves it as a
complete export that ``aptune bench`` loads like the real one. Used to time the mc500 exports on a lent GPU
machine that the weights (about 400 MB each) could not be copied to; see ``benchmarks/gpu_export_latency.sh``.

    python benchmarks/random_weights.py SKELETON DEST [--seed 0]

Every linear layer of the built model is checked against the shape the export's config lists for it, so a
timing of it is a timing of the export's architecture.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch


def check_shapes(model: torch.nn.Module, listed: dict, skeleton: Path) -> None:
    """Every linear layer of ``model`` has the out x in shape that the export's config lists for it."""
    built = {name: list(m.weight.shape) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    wrong = {name: (built.get(name), list(shape)) for name, shape in listed.items() if built.get(name) != list(shape)}
    if wrong or set(built) != set(listed):
        raise ValueError(f"{skeleton}: the model built from config.json does not have the listed linear shapes "
                         f"(built, listed): {dict(list(wrong.items())[:3])}, {len(built)} built, {len(listed)} listed")


def build(skeleton: Path, dest: Path, seed: int = 0) -> int:
    """Save a random-weight copy of ``skeleton``'s model at ``dest``; return its parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (skeleton / "aptune_structure.json").is_file():
        raise FileNotFoundError(f"{skeleton} has no aptune_structure.json: expected an aptune export's folder "
                                f"(config.json, aptune_structure.json, modeling_aptune.py)")
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(skeleton, trust_remote_code=True)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    check_shapes(model, json.loads((skeleton / "config.json").read_text())["aptune_structure"]["linears"], skeleton)
    model.save_pretrained(dest)
    for path in skeleton.iterdir():  # the structure file and anything else save_pretrained does not write
        if path.is_file() and not (dest / path.name).exists():
            shutil.copy(path, dest / path.name)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("skeleton", type=Path, help="an aptune export's folder; model.safetensors is not read")
    parser.add_argument("dest", type=Path, help="where the random-weight export goes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = build(args.skeleton, args.dest, args.seed)
    print(f"{args.dest}: {params:,} parameters, random weights (seed {args.seed}) in {args.skeleton}'s shapes")


if __name__ == "__main__":
    main()
