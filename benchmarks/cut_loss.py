"""What a cut before tuning costs, before any recovery: the held-out loss of the model cut to the configured
density from one calibration, for several layer floors (``prune.layer_floor``) and calibration sizes (issue 13).

The calibration batches are the ones ``aptune train`` draws (same loader, same seed). The keep sets are applied as
binary masks, which compute exactly what the physically cut model computes (tests/test_core_invariants.py), so
one loaded model serves every variant.

    python benchmarks/cut_loss.py --config configs/smollm2/alpaca_qv.yaml model.dtype=float32 \\
        --floors 0 0.5 0.6 0.7 --json results/llama/recovery/cut_loss.json
    python benchmarks/cut_loss.py --config configs/smollm2/alpaca.yaml model.dtype=float32 train.seed=42 \\
        --floors 0.6 --calibration 4 8 16 32 64 --json results/llama/recovery/calibration_count/seed42.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from aptune import APT
from aptune.config import load_config
from aptune.data.collate import make_dataloader
from aptune.models import load_tokenizer
from aptune.provenance import meta_info
from aptune.search import layer_floor, search_keep_set
from aptune.train.recipe import build_model
from aptune.train.tasks import load_train_task


def calibrate(apt: APT, batches, counts: list[int]) -> dict[int, dict]:
    """Salience after each of ``counts`` calibration batches (``APT.calibrate``, as a cut before tuning)."""
    return {done: copy.deepcopy(apt.scorer.scores())
            for done in apt.calibrate(batches, max(counts)) if done in counts}


def heldout_loss(apt: APT, task) -> float:
    apt.model.eval()
    with torch.no_grad():
        loss = task.evaluate(apt.model.model)["eval_loss"]
    apt.model.train()
    return loss


def cut_and_score(apt: APT, task, scores: dict, prune, floor: float, refit_batches: list | None = None) -> dict:
    """Held-out loss with the keep set of ``scores`` (``prune``'s density and rounding, ``floor``) applied as masks,
    and with ``refit_batches`` also after refitting the cut's writers on them (``prune.refit``); the masks and
    weights are reset afterwards."""
    state = apt.model.state
    protect = layer_floor(scores, state, floor, prune.round_to)
    keep = search_keep_set(scores, state, apt.model.counter, int(prune.density * apt.model.original_params),
                           protect=protect, round_to=prune.round_to)
    untouched = {"heads": dict(state.heads), "ffn": dict(state.ffn), "hidden": state.hidden}
    family = apt.model.family
    writers = [s.o for s in family.attention_sites] + [s.down for s in family.ffn_sites]
    weights = {path: family.model.get_submodule(path).weight.detach().clone() for path in writers}
    state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)
    extra = {}
    try:
        loss = heldout_loss(apt, task)
        kept = state.kept_sizes()
        if refit_batches is not None:
            errors = apt.refit(refit_batches)
            extra = {"eval_loss_refit": heldout_loss(apt, task), "refit_error": errors}
    finally:
        state.set_masks(**untouched)
        for path, weight in weights.items():
            family.model.get_submodule(path).weight.data.copy_(weight)
    ffn = list(kept["ffn"].values())
    return {"eval_loss": loss, "params": keep.params, "density": keep.params / apt.model.original_params,
            "hidden": kept["hidden"], "ffn_min": min(ffn), "ffn_max": max(ffn),
            "layers_without_heads": sum(1 for n in kept["heads"].values() if n == 0), **extra}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value, as for aptune train")
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--calibration", type=int, nargs="+", default=None,
                        help="numbers of calibration batches (default: the config's prune.calibration_batches)")
    parser.add_argument("--refit", action="store_true",
                        help="also score each cut after refitting its writers (prune.refit) on the next "
                             "prune.calibration_batches batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    counts = args.calibration or [config.prune.calibration_batches]
    started = time.perf_counter()
    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    torch.manual_seed(config.train.seed)
    apt = APT(build_model(config, task.num_labels, task.label_names), config.method, total_steps=config.train.steps,
              seed=config.train.seed)
    loader = make_dataloader(task.train, config.train.batch_size, tokenizer.pad_token_id, shuffle=True,
                             seed=config.train.seed + 1, group_by_length=True, drop_last=True)  # as aptune train
    batches = iter(loader)
    snapshots = calibrate(apt, batches, counts)
    refit_batches = ([b for _, b in zip(range(config.prune.calibration_batches), batches)] if args.refit else None)
    rows = [{"variant": "dense", "eval_loss": heldout_loss(apt, task), "density": 1.0}]
    print(f"dense: held-out loss {rows[0]['eval_loss']:.4f}", flush=True)
    for count, floor in ((c, f) for c in counts for f in args.floors):
        row = {"variant": f"calibration {count}, floor {floor}", "calibration_batches": count, "layer_floor": floor,
               **cut_and_score(apt, task, snapshots[count], config.prune, floor, refit_batches)}
        rows.append(row)
        print(f"{row['variant']}: held-out loss {row['eval_loss']:.4f} (FFN widths {row['ffn_min']}-"
              f"{row['ffn_max']}, layers without heads {row['layers_without_heads']})"
              + (f"; after the refit {row['eval_loss_refit']:.4f}" if args.refit else ""), flush=True)
    result = {"command": "python benchmarks/cut_loss.py " + " ".join(argv),
              "config": args.config, "overrides": args.overrides, "density": config.prune.density,
              "seconds": time.perf_counter() - started, "rows": rows, "provenance": meta_info()}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
