"""The loop around a peer's method: the run's data and schedule, the peer's adapters, aptune's evaluation, measures
and run folder, and a merged export that stock ``transformers`` loads."""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import PartialState

from aptune.bench.memory import PeakBreakdown, TrainingMemory, tensors_within
from aptune.config import RunConfig
from aptune.data import seed_everything
from aptune.models import load_model, load_tokenizer
from aptune.families import family_for
from aptune.peers import adalora, torchpruning
from aptune.provenance import meta_info
from aptune.structures.params import ParamCounter
from aptune.train.progress import JsonlLog, Progress
from aptune.train.recipe import _peak_rss_bytes, linear_schedule, training_batches
from aptune.train.run_folder import claim
from aptune.train.tasks import load_train_task, set_label_names

# each peer's module: wrap(model, config, batches) -> (PEFT model, what the peer did), after_optimizer_step, ranks
METHODS = {"adalora": adalora, "torchpruning_magnitude": torchpruning, "torchpruning_taylor": torchpruning}


def train_peer(config: RunConfig) -> dict:
    """Train ``config``'s peer method (``peer.method``) in one process; returns the summary (also ``summary.json``)."""
    proc = PartialState(cpu=not torch.cuda.is_available())
    if proc.num_processes > 1:
        raise ValueError(f"peer.method={config.peer.method} runs in one process; start it without accelerate launch")
    out = Path(config.output_dir)
    lock = claim(out, config.train.resume, config.train.overwrite)
    try:
        return _train(config, METHODS[config.peer.method], out, proc.device)
    finally:
        lock.close()


def _train(config: RunConfig, method, out: Path, device: torch.device) -> dict:
    t = config.train
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.yaml")
    log = JsonlLog(out / "metrics.jsonl")
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)
    breakdown = PeakBreakdown(holders=dict)  # the process's bytes at its peak, as every aptune run records them
    breakdown.stage("start")
    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    batches = training_batches(task.train, config, tokenizer.pad_token_id, device)
    breakdown.stage("data")
    base = load_model(config.model.name, head=config.model.head, num_labels=task.num_labels)
    breakdown.stage("model")
    set_label_names(base, task.label_names)
    original = ParamCounter(family_for(base)).count_model()  # the parameters APT's density counts
    start = time.perf_counter()  # a pruning peer's cut (and its calibration) is part of its training
    model, done_by_peer = method.wrap(base, config, batches, **_options(config.peer.method))
    model.to(device).train()
    density = done_by_peer.get("cut", {}).get("params", original) / original
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    schedule = linear_schedule(optimizer, t.steps, int(t.warmup_ratio * t.steps))  # the same as APT's runs
    memory, history = TrainingMemory(model), []
    breakdown.holders = lambda: {"parameters": list(model.parameters()),
                                 "gradients": [p.grad for p in model.parameters()],
                                 "optimizer": tensors_within(optimizer.state)}
    progress = Progress(0, t.steps, every=t.log_every)
    for step in range(t.steps):
        began = time.perf_counter()
        with memory.watch() as saved:
            outputs = model(**next(batches))
        breakdown.sample(step + 1, "forward", saved.bytes)
        outputs.loss.backward()
        breakdown.sample(step + 1, "backward")
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        method.after_optimizer_step(model, step)
        schedule.step()
        memory.record(step + 1, saved, optimizer)
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % t.log_every == 0 or done == t.steps:
            loss = float(outputs.loss.detach())
            log.write(step=done, loss=loss, lr=schedule.get_last_lr()[0], step_time=time.perf_counter() - began,
                      peak_rss=_peak_rss_bytes(), wall=time.perf_counter() - start)
            progress.update(done, loss=loss)
        else:
            progress.update(done)
        if done % t.eval_every == 0 or done == t.steps:
            history.append(_evaluate(model, task, done, time.perf_counter() - start, log, density))
            breakdown.sample(done, "evaluation")
    progress.close()
    train_time = time.perf_counter() - start
    return _save(config, model, method, tokenizer, task, out, history, train_time, memory, original, done_by_peer,
                 breakdown)


def _options(name: str) -> dict:
    return {"importance": name.removeprefix("torchpruning_")} if name.startswith("torchpruning_") else {}


def _evaluate(model, task, step: int, wall: float, log: JsonlLog, density: float) -> dict:
    model.eval()
    metrics = task.evaluate(model)
    model.train()
    log.write(event="eval", step=step, wall=wall, **metrics)
    print(f"[aptune] step {step}: dev {task.primary_metric} {metrics[task.primary_metric]:.4f}")
    return {"step": step, "wall": wall, **metrics, "density": density}


def _save(config, model, method, tokenizer, task, out: Path, history, train_time, memory, original, done_by_peer,
          breakdown) -> dict:
    """The merged export (a stock ``transformers`` folder) and ``summary.json`` in the recipe's layout."""
    final_ranks = method.ranks(model)
    merged = model.merge_and_unload()
    merged.eval()
    export = out / "export"
    merged.save_pretrained(export)
    tokenizer.save_pretrained(export)
    best = (max if task.higher_is_better else min)(h[task.primary_metric] for h in history)
    params = ParamCounter(family_for(merged)).count_model()
    summary = {
        "task": task.name, "primary_metric": task.primary_metric, "num_labels": task.num_labels,
        "final": history[-1], "higher_is_better": task.higher_is_better, "best_after_pruning": best,
        "params": params, "original_params": original, "density": params / original,
        "total_params": sum(p.numel() for p in merged.parameters()),
        "train_time_s": train_time, "peak_rss_bytes": _peak_rss_bytes(), "ranks": final_ranks, "export": str(export),
        "history": history, "pruning_accuracy": None,
        "memory": memory.peak.as_dict() if memory.peak else None, "memory_breakdown": breakdown.as_dict(),
        "masks": None,
        "peer": {"method": config.peer.method, "peft": version("peft"), **done_by_peer},
        "provenance": meta_info(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
