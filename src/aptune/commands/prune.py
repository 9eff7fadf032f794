"""``aptune prune``: one-shot structured pruning of a pretrained model to a parameter density, then export.

No training happens here (that is ``aptune train``): blocks are ranked by a data-free score (weight
magnitude by default) per parameter, the budget search keeps the best prefix under ``density`` × the
model's prunable parameters, and the merged, physically smaller model is saved in Hugging Face format.
The command prints the parameter counts and the CPU latency of the dense and the pruned model.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

NAME = "prune"
HELP = "prune a pretrained model to a parameter density (one shot, no training) and export it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm", help="short name (minilm, smollm2-135m), folder or hub id")
    parser.add_argument("--head", default="sequence-classification",
                        choices=["base", "sequence-classification", "causal-lm", "seq2seq-lm"])
    parser.add_argument("--num-labels", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.4,
                        help="fraction of the prunable (non-embedding, non-head) parameters to keep, in (0, 1]")
    parser.add_argument("--score", default="magnitude", choices=["magnitude", "random"],
                        help="data-free block score (salience from data needs `aptune train`)")
    parser.add_argument("--round-to", type=int, default=8,
                        help="round kept FFN widths and hidden size down to a multiple of this (aligned matmuls)")
    parser.add_argument("--layer-floor", type=float, default=0.0,
                        help="every layer keeps at least this fraction of its head groups and FFN neurons, in [0, 1)")
    parser.add_argument("--output", required=True, help="export folder")
    parser.add_argument("--seed", type=int, default=0)


def check_density(density: float) -> float:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1] (the fraction of parameters to keep); got {density}")
    return density


def search_density(scores, apt, density: float, round_to: int, floor: float = 0.0):
    """The keep set of ``density`` x the prunable parameters (every layer keeping ``floor`` of its blocks); one that
    leaves the model nothing to compute is an error naming the density and the smallest one that works."""
    from aptune.search import EmptyKeepSetError, layer_floor, search_keep_set

    protect = layer_floor(scores, apt.state, floor, round_to)
    try:
        return search_keep_set(scores, apt.state, apt.counter, int(density * apt.original_params), protect=protect,
                               round_to=round_to)
    except EmptyKeepSetError as err:
        raise ValueError(_density_advice(err, density, apt.original_params, round_to)) from None


def _density_advice(err, density: float, total: int, round_to: int) -> str:
    said = f"--density {density:g} keeps {err.missing}, so the pruned model would compute nothing"
    if err.smallest_budget is None:
        return f"{said}; raise the density"
    # rounded up, so that int(smallest * total) reaches the budget
    smallest = math.ceil((err.smallest_budget + 0.5) / total * 1e6) / 1e6
    rounding = f" with --round-to {round_to}" if round_to > 1 else ""
    return (f"{said}; the smallest density that keeps at least one hidden dimension and one attention head or FFN "
            f"neuron{rounding} is {smallest:g}: raise the density")


def run(args: argparse.Namespace) -> int:
    import torch

    from aptune.bench import compare_latency
    from aptune.model import AdapterConfig, APTModel
    from aptune.models import load_model, load_tokenizer
    from aptune.salience import build_scorer

    check_density(args.density)
    if args.round_to < 1:
        raise ValueError(f"--round-to must be >= 1 (1 keeps the exact budget); got {args.round_to}")
    if not 0.0 <= args.layer_floor < 1.0:
        raise ValueError("--layer-floor must lie in [0, 1) (a fraction of each layer's blocks); "
                         f"got {args.layer_floor}")
    torch.manual_seed(args.seed)
    num_labels = args.num_labels if args.head == "sequence-classification" else None
    apt = APTModel(load_model(args.model, head=args.head, num_labels=num_labels), AdapterConfig(rank=0),
                   seed=args.seed)
    scorer = build_scorer(args.score, **({"seed": args.seed} if args.score == "random" else {})).attach(apt)
    scorer.update()
    keep = search_density(scorer.scores(), apt, args.density, args.round_to, args.layer_floor)
    apt.state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)
    kept = apt.state.kept_sizes()
    print(f"kept {sum(kept['heads'].values())} of {sum(len(m) for m in apt.state.heads.values())} head groups, "
          f"{sum(kept['ffn'].values())} of {sum(len(m) for m in apt.state.ffn.values())} FFN neurons, "
          f"{kept['hidden']} of {len(apt.state.hidden)} hidden dims")
    tokenizer = None
    try:
        tokenizer = load_tokenizer(args.model)
    except (OSError, ValueError):
        print("no tokenizer found; exporting the model alone")
    out = apt.export(args.output, tokenizer=tokenizer)
    dense = load_model(args.model, head=args.head, num_labels=num_labels)
    pruned = apt.merged_model()
    # the shape `aptune train` times too (shorter for a model with fewer positions); `aptune bench` takes others
    seq_len = min(128, getattr(dense.config, "max_position_embeddings", None) or 128)
    timing = compare_latency({"dense": dense, "pruned": pruned}, batch_size=32, seq_len=seq_len, repeats=5)
    summary = {
        "model": args.model, "density_target": args.density, "score": args.score, "layer_floor": args.layer_floor,
        "prunable_params_dense": apt.original_params, "prunable_params_pruned": keep.params,
        "density": keep.params / apt.original_params,
        "total_params_dense": sum(p.numel() for p in dense.parameters()),
        "total_params_pruned": sum(p.numel() for p in pruned.parameters()),
        "latency": {name: result.as_dict() for name, result in timing.items()},
        "speedup": timing["dense"].median_s / timing["pruned"].median_s,
        "export": str(out),
    }
    (Path(out) / "prune_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"prunable parameters: {summary['prunable_params_dense']:,} -> {summary['prunable_params_pruned']:,} "
          f"(density {summary['density']:.3f})")
    print(f"all parameters:      {summary['total_params_dense']:,} -> {summary['total_params_pruned']:,}")
    print(f"latency (batch 32, seq {seq_len}, median of 5): "
          f"dense {timing['dense'].median_s * 1000:.1f} ms, pruned {timing['pruned'].median_s * 1000:.1f} ms, "
          f"speed-up {summary['speedup']:.2f}x")
    print(f"exported to {out}")
    return 0
