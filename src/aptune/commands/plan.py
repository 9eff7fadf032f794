"""``aptune plan MODEL``: parameters at a density and the memory of training and inference, by component and
phase, for each dtype, from the model's config alone (built on the meta device; no weights are read).

    aptune plan configs/models/llama-2-7b.json --head causal-lm --density 0.7 --batch-size 4 --seq-len 512 \\
        --dtype bfloat16 --gradient-checkpointing --device cuda

MODEL is a short name (minilm, smollm2-135m), a model folder, or a ``config.json``-style file.
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
    parser.add_argument("model", help="short name, model folder, or a config.json-style file")
    parser.add_argument("--head", default="sequence-classification",
                        choices=("base", "sequence-classification", "causal-lm", "seq2seq-lm"))
    parser.add_argument("--density", type=float, default=0.4, help="prune.density (default 0.4)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (all assumed full)")
    parser.add_argument("--dtype", action="append", choices=("float32", "bfloat16", "float16"),
                        help="the frozen base's dtype; repeat for several (default: float32 and bfloat16)")
    parser.add_argument("--rank", type=int, default=8, help="adapter.rank")
    parser.add_argument("--targets", type=_targets, default=[],
                        help="adapter.targets, comma-separated (e.g. q,k,v,o,gate,up,down); default: the family's")
    parser.add_argument("--budget-ratio", type=float, default=4.0, help="rank.budget_ratio")
    parser.add_argument("--no-distill", action="store_true", help="distill.enabled=false")
    parser.add_argument("--recover-teacher", action="store_true",
                        help="recover.teacher=dense: distil from the unpruned model after a cut before tuning (implies --no-distill)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="which attention kernel and dropout masks to expect (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the plan here")
    parser.add_argument("--check", action="store_true",
                        help="load the real model (reads its weights) and compare the plan with the deterministic "
                             "memory measure of one training step, dense and cut, and of one forward pass")


def _targets(text: str) -> list[str]:
    from aptune.model import ADAPTER_ROLES

    targets = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(ADAPTER_ROLES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown adapter target(s) {', '.join(unknown)}; "
                                         f"choose from {', '.join(ADAPTER_ROLES)}")
    return targets


def load_model_config(model: str):
    """The ``transformers`` config of a short name, folder, GGUF file or config file (no weights read)."""
    from transformers import AutoConfig

    from aptune.models import resolve_model_source

    path = Path(model)
    if path.is_file() and path.suffix == ".json":
        return AutoConfig.from_pretrained(str(path))
    source = resolve_model_source(model)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    return AutoConfig.from_pretrained(source.path, **kwargs)


def run(args: argparse.Namespace) -> int:
    from aptune.bench.planner import PlanSettings, build_on_meta, describe, plan

    if not 0 < args.density <= 1:
        raise ValueError(f"--density must lie in (0, 1]; got {args.density}")
    config = load_model_config(args.model)
    apt = build_on_meta(config, args.head, targets=args.targets, rank=args.rank)
    arch = describe(apt, args.head)
    plans = []
    for dtype in args.dtype or ["float32", "bfloat16"]:
        settings = PlanSettings(density=args.density, batch_size=args.batch_size, seq_len=args.seq_len, dtype=dtype,
                                rank=args.rank, targets=args.targets, budget_ratio=args.budget_ratio,
                                distill=not (args.no_distill or args.recover_teacher),
                                recover_teacher=args.recover_teacher,
                                gradient_checkpointing=args.gradient_checkpointing, device=args.device)
        plans.append(plan(apt, arch, settings))
    print(render(args.model, plans))
    checks = [_check(args.model, args.head, p["settings"]) for p in plans] if args.check else []
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
