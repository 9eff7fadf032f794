"""``aptune plan``: parameters at a density and the memory of training and inference, by component and phase,
for each dtype, of the run a config describes, from the model's config alone (built on the meta device; no
weights are read).

    aptune plan --config smollm2/alpaca model.name=configs/models/llama-2-7b.json train.batch_size=4 \\
        data.max_length=512 model.dtype=bfloat16 train.gradient_checkpointing=true --device cuda

The run's settings come from the config and its ``key=value`` overrides, as ``aptune train`` reads them: the model
(``model.name``: a short name, a model folder, or a ``config.json``-style file), its head, ``prune.density``,
``train.batch_size``, ``data.max_length`` (every sequence assumed full), the adapters, ``rank.budget_ratio``,
``distill.enabled``, ``recover.teacher`` and ``train.gradient_checkpointing``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

NAME = "plan"
HELP = "parameters and memory of an APT run (training phases and inference) from a model's config alone"

PHASE_NOTES = {"tuning": "dense, initial ranks (also the calibration passes of prune.before_tuning)",
               "pruning": "last pruning step, ranks at budget (with distillation: dense teacher, blocks not cut yet)",
               "recovery": "cut to the density, ranks at budget"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the run's YAML config or a shipped config's name; defaults without one")
    parser.add_argument("--dtype", action="append", choices=("float32", "bfloat16", "float16"),
                        help="the frozen base's dtype; repeat for several (default: model.dtype, or float32 and "
                             "bfloat16 when it is auto)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="which attention kernel and dropout masks to expect (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the plan here")
    parser.add_argument("--check", action="store_true",
                        help="load the real model (reads its weights) and compare the plan with the deterministic "
                             "memory measure of one training step, dense and cut, and of one forward pass")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. prune.density=0.7 train.batch_size=4")


def run(args: argparse.Namespace) -> int:
    from aptune.bench.planner import build_on_meta, describe, load_model_config, plan, plan_settings
    from aptune.config import load_config

    config = load_config(args.config, args.overrides)
    model, head = config.model.name, config.model.head
    apt = build_on_meta(load_model_config(model), head, targets=config.adapter.targets, rank=config.adapter.rank)
    arch = describe(apt, head)
    default_dtypes = ["float32", "bfloat16"] if config.model.dtype == "auto" else [config.model.dtype]
    plans = [plan(apt, arch, plan_settings(config, dtype, args.device)) for dtype in args.dtype or default_dtypes]
    print(render(model, plans))
    checks = [_check(model, head, p["settings"]) for p in plans] if args.check else []
    for p, rows in zip(plans, checks):
        print("\n" + render_check(p["settings"], rows))
    if args.json:
        records = [_jsonable(p) for p in plans]
        for record, rows in zip(records, checks):
            record["check"] = rows
        args.json.write_text(json.dumps(records, indent=1))
    return 0


def _check(model: str, head: str, settings) -> list[dict]:
    """Plan against measure on the real model, in the planned dtype (one load; a copy for every measurement)."""
    import copy

    import torch

    from aptune.bench.planner import check
    from aptune.model import AdapterConfig, APTModel
    from aptune.models import load_model

    base = load_model(model, head=head, dtype=getattr(torch, settings.dtype))
    return check(lambda: APTModel(copy.deepcopy(base), AdapterConfig(list(settings.targets), settings.rank), seed=0),
                 head, settings)


def render_check(settings, rows: list[dict]) -> str:
    lines = [f"| {settings.dtype}, batch {settings.batch_size} x {settings.seq_len}"
             f"{', checkpointing' if settings.gradient_checkpointing else ''} | planned MiB | measured MiB | "
             "plan vs measure |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['what']} | {row['planned'] / 2 ** 20:,.1f} | {row['measured'] / 2 ** 20:,.1f} | "
                     f"{row['error']:+.1%} |")
    return "\n".join(lines)


def render(model: str, plans: list[dict]) -> str:
    first = plans[0]
    arch, s = first["architecture"], first["settings"]
    lines = [f"{model}: {arch.family}, {arch.layers} layers, hidden {arch.hidden}, {arch.heads} heads over "
             f"{arch.kv_heads} KV heads, FFN {arch.ffn}; {arch.total_params / 1e6:,.1f}M parameters",
             f"density {s.density}: budgeted parameters {first['params_dense'] / 1e6:,.1f}M -> "
             f"{first['params_pruned'] / 1e6:,.1f}M (all parameters {first['total_params_dense'] / 1e6:,.1f}M -> "
             f"{first['total_params_pruned'] / 1e6:,.1f}M); blocks cut evenly across layers",
             f"batch {s.batch_size} x {s.seq_len} tokens, device {s.device}, gradient checkpointing "
             f"{'on' if s.gradient_checkpointing else 'off'}, self-distillation {'on' if s.distill else 'off'}"
             + (", distillation from the unpruned model (recover.teacher=dense)" if s.recover_teacher else ""), ""]
    for p in plans:
        lines += _phase_table(p) + [""]
    return "\n".join(lines).rstrip()


def _phase_table(p: dict) -> list[str]:
    phases = p["phases"]
    rows = [("frozen weights", "frozen_weights"), ("adapters (float32)", "adapters"), ("task head (float32)", "head"),
            ("gradients", "gradients"), ("optimizer (AdamW)", "optimizer"), ("activations kept for backward", "activations"), ("recomputed layer (checkpointing)", "recomputed"),
            ("teacher (distillation)", "teacher")]
    unit, scale = ("GiB", 1024 ** 3) if p["peak"].total >= 1024 ** 3 else ("MiB", 1024 ** 2)

    def size(n: float) -> str:
        return f"{n / scale:,.2f}"

    header = f"| {p['settings'].dtype} training step, {unit} | " + " | ".join(ph.phase for ph in phases) + " |"
    lines = [header, "|---" * (len(phases) + 1) + "|"]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(size(getattr(ph, key)) for ph in phases) + " |")
    lines.append("| **total** | " + " | ".join(f"**{size(ph.total)}**" for ph in phases) + " |")
    inference = p["inference"]
    lines.append(f"phases: " + "; ".join(f"{ph.phase} = {PHASE_NOTES[ph.phase]}" for ph in phases)
                 + f". Peak: {p['peak'].phase}, {size(p['peak'].total)} {unit}.")
    lines.append(f"inference (weights + peak activations of a forward pass), {unit}: " + ", ".join(
        f"{name} {size(v['total'])} ({size(v['weights'])} + {size(v['activations'])})" for name, v in inference.items()))
    return lines


def _jsonable(p: dict) -> dict:
    return {"architecture": asdict(p["architecture"]), "settings": asdict(p["settings"]), "kept": p["kept"],
            "params_dense": p["params_dense"], "params_pruned": p["params_pruned"],
            "total_params_dense": p["total_params_dense"], "total_params_pruned": p["total_params_pruned"],
            "phases": [{**asdict(ph), "total": ph.total} for ph in p["phases"]], "inference": p["inference"],
            "peak": p["peak"].phase}
