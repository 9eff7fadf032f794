"""``aptune train``: the recipe around :class:`aptune.APT`, as setup, loop, evaluate and save.

The method's decisions (salience, masks, pruning steps, rank growth, optimizer surgery, distillation) are the
APT object's; this file only orchestrates: data, model, optimizer and LR schedule, the loop, evaluation,
logs, checkpoints and the export. Every ablation is a config patch (docs/design.md), never a branch here.

Several processes (``accelerate launch --num_processes N``): each process trains on its shard of the
data; gradients are averaged here after every backward and salience inside the APT object, so every
process makes the same decisions and holds the same weights (data parallelism with an explicit all-reduce
instead of a DDP wrapper, which would have to be rebuilt after every physical cut).
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import PartialState

from aptune.bench.memory import PeakBreakdown, StepMemory, TrainingMemory, tensor_census, tensors_within
from aptune.config import RunConfig
from aptune.data import make_dataloader, seed_everything
from aptune.method import APT, APTLoss, PruningEvent, average_across_processes
from aptune.model import AdapterConfig, APTModel
from aptune.models import load_model, load_tokenizer, resolve_dtype
from aptune.provenance import meta_info
from aptune.train.checkpoint import (config_differences, latest_intact_checkpoint, restore_loop, restore_method,
                                     restore_model, save_checkpoint)
from aptune.train.preflight import preflight
from aptune.train.progress import JsonlLog, Progress
from aptune.train.run_folder import claim, truncate_log
from aptune.train.tasks import TrainTask, load_train_task, set_label_names
from aptune.train.trackers import Trackers
from aptune.tuning.rank_allocator import tuning_params


@dataclass
class Run:
    """Everything one training run holds."""

    config: RunConfig
    out: Path
    proc: Any  # accelerate's PartialState
    log: JsonlLog
    tokenizer: Any
    task: TrainTask
    shard: list
    batches: Iterator[dict[str, torch.Tensor]]
    apt: APT
    optimizer: torch.optim.Optimizer | None = None
    lr_schedule: Any = None
    params: list = field(default_factory=list)  # the optimizer's tensors, in its order
    history: list[dict] = field(default_factory=list)  # dev evaluations
    pruning_accuracy: float | None = None  # the dev metric at the target density, before recovery
    memory: TrainingMemory | None = None  # bytes of params, grads, optimizer state, saved activations; peak step
    breakdown: PeakBreakdown | None = None  # the process's bytes at its highest RSS, by holder
    retrain_best: dict | None = None  # distill.retrain_from: the best dev score since the last cut, and its tensors
    first_step: int = 0
    start_time: float = 0.0
    provenance: dict = field(default_factory=meta_info)  # commit and versions as the run starts

    @property
    def model(self) -> APTModel:
        return self.apt.model

    def wall(self) -> float:
        return time.perf_counter() - self.start_time


def train(config: RunConfig, command: str | None = None, stop_after: int | None = None) -> dict:
    """Run one configured training; returns the summary (also written to ``summary.json``).

    Args:
        command: the command line that started the run, for the export's model card.
        stop_after: stop, as if crashed, after writing a checkpoint at this step (tests of resume use it).
    """
    proc = PartialState(cpu=not torch.cuda.is_available())
    # an unknown tracker or a missing package fails on every process before anything is written; the main one opens
    trackers = Trackers(config.train.report_to)
    # before anything is written: a run that cannot work leaves no trace. Processes on one CPU machine share its
    # RAM; on GPUs each has its own device.
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", proc.num_processes)) if proc.device.type == "cpu" else 1
    for line in preflight(config, proc.device, sharing):
        proc.print(f"[aptune] {line}")
    out = Path(config.output_dir)
    # the run folder is this run's until it returns or fails (train/run_folder.py); other processes follow the main
    lock = claim(out, config.train.resume, config.train.overwrite) if proc.is_main_process else None
    try:
        run = setup(config, proc, out, trackers)
        stopped_at = loop(run, stop_after)
        return {"stopped_at": stopped_at} if stopped_at is not None else save(run, command)
    except BaseException:
        trackers.close(failed=True)
        raise
    finally:
        trackers.close()
        if lock is not None:
            lock.close()


# --------------------------------------------------------------------------------------------- setup


def setup(config: RunConfig, proc, out: Path, trackers: Trackers | None = None) -> Run:
    """Data, model, method, a resumed or calibrated state, optimizer and LR schedule, in this order (the
    order of random draws is part of a seeded run's result). ``proc``: accelerate's ``PartialState`` (one
    process, or one of several under ``accelerate launch``: gloo on CPU-only machines, NCCL on GPUs).
    ``trackers``: opened on the main process once the resume step is known, before the first record."""
    out.mkdir(parents=True, exist_ok=True)
    if proc.is_main_process:
        config.save(out / "config.yaml")
    log = JsonlLog(out / "metrics.jsonl" if proc.is_main_process else Path("/dev/null"))
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    breakdown = PeakBreakdown(holders=dict)  # readings only: nothing here draws from the RNG or touches a tensor
    breakdown.stage("start")

    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    breakdown.stage("data")
    shard = task.train[proc.process_index::proc.num_processes]
    batches = training_batches(shard, config, tokenizer.pad_token_id, proc.device)
    model = build_model(config, task.num_labels, task.label_names).to(proc.device)
    proc.print(f"[aptune] {task.name}: {len(task.train)} train / {len(task.eval)} eval examples from {task.source}")
    apt = APT(model, config.method, total_steps=config.train.steps, seed=config.train.seed)
    if proc.is_main_process:
        (out / "schedule.json").write_text(json.dumps(apt.schedules(), indent=1))
    breakdown.stage("model")
    run = Run(config, out, proc, log, tokenizer, task, shard, batches, apt, breakdown=breakdown)
    breakdown.holders = lambda: _tensor_holders(run)
    resumed = _restore_model_and_method(run)
    if trackers is not None and trackers.names and proc.is_main_process:
        trackers.open(out, config.to_dict(), resumed_at=resumed[1]["step"] if resumed else None)
        log.trackers = trackers
        proc.print(f"[aptune] {trackers.line(out)}")
    run.start_time = time.perf_counter() - (resumed[1]["wall"] if resumed else 0.0)
    if resumed is None:
        _prune_before_tuning(run)  # on the clock: the cut's calibration passes are part of the training cost
    _build_optimizer(run)
    if resumed is not None:
        _restore_loop(run, *resumed)
    return run


def training_batches(shard: list, config: RunConfig, pad_id: int, device: torch.device) -> Iterator[dict]:
    """The run's training batches, endless, shuffled by ``train.seed``, on ``device``."""
    return _on_device(_endless(_loader(shard, config, pad_id, config.train.seed)), device)


def _loader(examples: list, config: RunConfig, pad_id: int, seed: int):
    return make_dataloader(examples, config.train.batch_size, pad_id, shuffle=True, seed=seed,
                           group_by_length=True, drop_last=True, pin_memory=torch.cuda.is_available())


def _on_device(batches, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """The batches moved to the training device (pinned on a GPU machine, so the copy runs asynchronously)."""
    for batch in batches:
        yield {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _endless(loader) -> Iterator[dict[str, torch.Tensor]]:
    """Endless iteration over a loader, reshuffled each epoch."""
    epoch = 0
    while True:
        sampler = getattr(loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def build_model(config: RunConfig, num_labels: int | None, label_names=()) -> APTModel:
    """The configured pretrained model, wrapped for APT, in training mode (its classes named when known)."""
    a = config.adapter
    dtype = resolve_dtype(config.model.dtype, full_precision=a.train_base)
    model = APTModel(load_model(config.model.name, head=config.model.head, num_labels=num_labels, dtype=dtype),
                     AdapterConfig(list(a.targets), a.rank, a.scaling, a.train_head, a.train_base),
                     seed=config.train.seed)
    set_label_names(model.model, label_names)
    if config.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    return model


def _restore_model_and_method(run: Run) -> tuple[Path, dict] | None:
    """With ``train.resume``: the latest intact checkpoint's model and method state, after checking that it
    comes from this run's config; None when there is nothing to resume (a fresh folder)."""
    if not run.config.train.resume:
        return None
    folder = latest_intact_checkpoint(run.out / "checkpoints")
    log = run.out / "metrics.jsonl"
    if folder is None:
        if log.exists() and log.stat().st_size > 0:  # an earlier run logged steps but left nothing to resume from
            raise ValueError(f"train.resume=true, but {run.out / 'checkpoints'} holds no intact checkpoint to continue "
                             f"the earlier run from; set train.overwrite=true to start it over")
        run.proc.print(f"[aptune] no checkpoint in {run.out / 'checkpoints'}; starting from scratch")
        return None
    state = json.loads((folder / "trainer_state.json").read_text())
    differences = config_differences(state.get("config") or {}, resumable_config(run.config))
    if differences:
        raise ValueError(f"{folder} was written by a run with another config; refusing to resume from it. "
                         "Differences: " + "; ".join(differences))
    state = restore_model(run.model, folder)
    restore_method(run.apt, folder, state)
    if run.proc.is_main_process:
        truncate_log(log, state["step"])  # the steps after the checkpoint will be logged again
    return folder, state


# train keys a resume may change
RESUME_MAY_CHANGE = ("resume", "overwrite", "threads", "checkpoint_every", "report_to")


def resumable_config(config: RunConfig) -> dict:
    """The resolved config less what a resume may change: where the folder is, threads, checkpoints and the resume
    flags (none of them changes a result)."""
    data = config.to_dict()
    data.pop("output_dir", None)
    for key in RESUME_MAY_CHANGE:
        data["train"].pop(key, None)
    return data


def _prune_before_tuning(run: Run) -> None:
    p = run.config.prune
    if not p.cuts_before_tuning:
        return
    calibration = _on_device(_loader(run.shard, run.config, run.tokenizer.pad_token_id,
                                     run.config.train.seed + 1), run.proc.device)
    removed = run.apt.prune_before_tuning(calibration)
    density = run.apt.density()
    run.proc.print(f"[aptune] pruned before tuning from {p.calibration_batches} calibration batches: density "
                   f"{density:.3f}, removed {removed}")
    refit = run.apt.refit_errors
    if refit:
        before, after = (sum(e[k] for e in refit.values()) / len(refit) for k in ("before", "after"))
        run.proc.print(f"[aptune] refitted {len(refit)} writers of the cut: mean relative output error "
                       f"{before:.3f} -> {after:.3f}")
    run.log.write(event="prune_before_tuning", step=0, wall=run.wall(), removed=removed,
                  params=run.model.num_params(), density=density, kept=run.model.state.kept_sizes(),
                  **({"refit": refit} if refit else {}))
    if run.config.train.steps > 0:  # with no steps the final evaluation is this one
        _evaluate_at_target(run, 0)


def _build_optimizer(run: Run) -> None:
    """AdamW over the method's trainable tensors; linear warm-up, then linear decay to 0."""
    t = run.config.train
    run.optimizer = torch.optim.AdamW(run.apt.trainable_parameters(), lr=t.lr, weight_decay=t.weight_decay)
    run.lr_schedule = linear_schedule(run.optimizer, t.steps, int(t.warmup_ratio * t.steps))
    run.params = _optimizer_params(run.optimizer)
    run.memory = TrainingMemory(run.model, *([run.apt.transform] if run.apt.transform is not None else []))


def _tensor_holders(run: Run) -> dict[str, list[torch.Tensor]]:
    """Every tensor the run holds, by holder, in the order a shared storage is attributed."""
    modules = [run.model, *([run.apt.transform] if run.apt.transform is not None else [])]
    buffers = [(name.rpartition(".")[2], b) for m in modules for name, b in m.named_buffers()]
    teacher = [b for name, b in buffers if name.startswith("teacher_")]  # the snapshot adapters
    if run.apt.recovery_teacher is not None:
        teacher += [*run.apt.recovery_teacher.parameters(), *run.apt.recovery_teacher.buffers()]
    return {
        "parameters": [p for m in modules for p in m.parameters()] + [b for name, b in buffers
                                                                      if not name.startswith("teacher_")],
        "gradients": [p.grad for m in modules for p in m.parameters()],
        "optimizer": tensors_within(run.optimizer.state if run.optimizer else {}),
        "teacher": teacher,
        "salience": tensors_within(run.apt.scorer) + tensors_within(run.apt.importance),
    }


def _held_bytes(run: Run) -> int:
    """Bytes of the tensors the method holds beside the model and the optimizer (teacher, salience statistics)."""
    census = tensor_census(_tensor_holders(run))
    return census["teacher"] + census["salience"]


def linear_schedule(optimizer, steps: int, warmup: int):
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * max(0.0, (steps - s) / max(1, steps - warmup)))


def _optimizer_params(optimizer) -> list[torch.nn.Parameter]:
    return [q for group in optimizer.param_groups for q in group["params"]]


def _restore_loop(run: Run, folder: Path, state: dict) -> None:
    run.first_step = state["step"]
    if run.apt.retrain_step is not None and state["step"] > run.apt.last_pruning_step:
        raise ValueError(f"{folder} is past the last pruning step of a run with distill.retrain_from, whose best "
                         "adapters since then are not checkpointed: resume from an earlier checkpoint, or start over "
                         "with train.overwrite=true")
    for _ in range(run.first_step):  # the data order continues where it stopped (before the RNG is restored:
        next(run.batches)  # starting a DataLoader iterator draws from torch's global RNG)
    restore_loop(folder, state, run.apt, run.optimizer, run.lr_schedule)
    run.params = _optimizer_params(run.optimizer)
    run.history, run.pruning_accuracy = state["history"], state.get("pruning_accuracy")
    if state.get("memory"):
        run.memory.peak = StepMemory(**{k: state["memory"][k] for k in ("step", "params_bytes", "grads_bytes",
                                                                      "optimizer_bytes", "activations_bytes")},
                                     held_bytes=state["memory"].get("held_bytes", 0))
    run.proc.print(f"[aptune] resumed from {folder} at step {run.first_step}")


# ---------------------------------------------------------------------------------------------- loop


def loop(run: Run, stop_after: int | None = None) -> int | None:
    """Train from ``run.first_step`` to the end; returns the step if ``stop_after`` stopped it."""
    t = run.config.train
    progress = Progress(run.first_step, t.steps, enabled=run.proc.is_main_process, every=t.log_every)
    for step in range(run.first_step, t.steps):
        step_start = time.perf_counter()
        batch = next(run.batches)
        with run.memory.watch() as saved:  # counts the activations kept for backward, changes nothing
            out = run.apt.compute_loss(batch)
        run.breakdown.sample(step + 1, "forward", saved.bytes)  # the two points where a step's memory peaks
        out.loss.backward()
        average_across_processes([q.grad for q in run.params if q.grad is not None])
        run.apt.after_backward()
        run.breakdown.sample(step + 1, "backward")
        torch.nn.utils.clip_grad_norm_(run.params, t.grad_clip)
        run.optimizer.step()
        run.lr_schedule.step()
        run.memory.record(step + 1, saved, run.optimizer, held_bytes=_held_bytes(run))
        run.optimizer.zero_grad(set_to_none=True)
        event = run.apt.after_optimizer_step(run.optimizer)
        if event is not None:
            run.params = _optimizer_params(run.optimizer)
            _after_pruning_step(run, event)
            run.breakdown.sample(step + 1, "pruning step")
        if run.apt.teacher_check_due():
            _offer_teacher(run, step + 1)

        done = step + 1
        _log_step(run, done, out, time.perf_counter() - step_start, progress)
        if done % t.eval_every == 0 or done == t.steps:
            evaluate(run, done)
            run.breakdown.sample(done, "evaluation")
        if done == run.apt.retrain_step:
            _start_retraining(run, done)
        if (t.checkpoint_every and done % t.checkpoint_every == 0 and done < t.steps) or done == stop_after:
            _checkpoint(run, done)
            if done == stop_after:
                run.proc.print(f"[aptune] stopping after step {done} as asked")
                progress.close()
                return done
    progress.close()
    return None


def _after_pruning_step(run: Run, event: PruningEvent) -> None:
    """Stage banners, the pruning event's log record, and the dev metric at the target density."""
    cut_before = run.config.prune.cuts_before_tuning  # then the scheduled steps only grow ranks
    if event.pruned and not cut_before:
        run.proc.print(f"[aptune] pruning step {event.k}/{event.num_steps} at step {event.step}: density "
                       f"{event.density:.3f} (target {event.target_density:.3f}), removed {event.removed}"
                       + _growth_note(run, event))
    elif run.config.rank.strategy != "none":
        run.proc.print(f"[aptune] rank-growth step {event.k}/{event.num_steps} at step {event.step}: tuning params "
                       f"{event.tuning_params:,}")
    run.log.write(event="prune", step=event.step, k=event.k, removed=event.removed, params=event.params,
                  density=event.density, ranks=event.ranks, kept=run.model.state.kept_sizes())
    if event.reached_target and not cut_before:
        _evaluate_at_target(run, event.step)
    if event.distillation_started:
        run.proc.print(f"[aptune] distillation starts at step {event.step} (teacher = snapshot of the adapters)")
        _evaluate_teacher(run, event.step, None)


def _evaluate_at_target(run: Run, step: int) -> None:
    """The "pruning accuracy": the dev metric at the target density, before any recovery training."""
    metrics = _dev_metrics(run)
    run.log.write(event="eval_at_target", step=step, wall=run.wall(), **metrics)
    run.pruning_accuracy = metrics[run.task.primary_metric]
    run.proc.print(f"[aptune] at the target density before recovery: dev {run.task.primary_metric} "
                   f"{run.pruning_accuracy:.4f}")


def _growth_note(run: Run, event: PruningEvent) -> str:
    if run.config.rank.strategy == "none":
        return ""
    return f"; rank growth -> tuning params {event.tuning_params:,}"


def _log_step(run: Run, done: int, out: APTLoss, step_time: float, progress: Progress) -> None:
    t = run.config.train
    if done % t.log_every == 0 or done == t.steps:
        loss = float(out.loss.detach())
        kept = run.apt.kept_density()
        run.log.write(step=done, loss=loss, lr=run.lr_schedule.get_last_lr()[0], mu=out.mu,
                      params=run.model.num_params(), density=run.apt.density(), kept_density=kept,
                      tuning_params=tuning_params(run.model), step_time=step_time, peak_rss=_peak_rss_bytes(),
                      wall=run.wall(), **out.parts)
        progress.update(done, loss=loss, density=kept)
    else:
        progress.update(done)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _checkpoint(run: Run, done: int) -> None:
    if run.proc.is_main_process:
        save_checkpoint(run.out / "checkpoints", done, run.apt, run.optimizer, run.lr_schedule,
                        {"config": resumable_config(run.config),
                         "history": run.history, "pruning_accuracy": run.pruning_accuracy, "wall": run.wall(),
                         "memory": run.memory.peak.as_dict() if run.memory.peak else None,
                         "num_labels": run.task.num_labels, "label_names": list(run.task.label_names)})
    run.proc.wait_for_everyone()


# ------------------------------------------------------------------------------------------ evaluate


def _dev_metrics(run: Run) -> dict[str, float]:
    run.model.eval()
    with run.model.autocast():  # the task's scorer calls the inner transformers model
        metrics = run.task.evaluate(run.model.model)
    run.model.train()
    return metrics


def evaluate(run: Run, done: int) -> dict[str, float]:
    """Evaluate on the dev set, record it, and tell the method (its teacher follows the best model)."""
    metrics = _dev_metrics(run)
    score = metrics[run.task.primary_metric]
    run.history.append({"step": done, "wall": run.wall(), **metrics, "density": run.apt.density()})
    run.log.write(event="eval", step=done, wall=run.wall(), **metrics)
    run.proc.print(f"[aptune] step {done}: dev {run.task.primary_metric} {score:.4f}")
    if run.apt.report_score(score, run.task.higher_is_better) and run.apt.has_teacher:
        _evaluate_teacher(run, done, score)  # a new best: the teacher was refreshed from it
    retrain = run.apt.retrain_step
    best = run.retrain_best
    if retrain is not None and run.apt.last_pruning_step <= done <= retrain and run.task.better(
            score, best["score"] if best else None):
        run.retrain_best = {"step": done, "score": score, "tensors": [q.detach().clone() for q in run.params]}
    return metrics


def _offer_teacher(run: Run, step: int) -> None:
    """``distill.refresh=decay_start``: the model is scored as a mask decay starts (on the clock: the official code
    runs this evaluation as part of training) and becomes the teacher on a new best among these scores."""
    metrics = _dev_metrics(run)
    score = metrics[run.task.primary_metric]
    run.log.write(event="teacher_check", step=step, wall=run.wall(), **metrics)
    if run.apt.offer_teacher(score, run.task.higher_is_better):
        _evaluate_teacher(run, step, score)


RETRAIN_LR = 0.1  # the official code's retraining after distillation: 0.1x the peak learning rate,
RETRAIN_WARMUP = 0.06  # 6% warm-up, then linear decay to 0


def _start_retraining(run: Run, step: int) -> None:
    """``distill.retrain_from``: reload the trainable tensors of the best dev score since the last pruning step, then
    a fresh AdamW at 0.1x the learning rate with its own warm-up and linear decay over the steps left."""
    best = run.retrain_best
    if best is not None:
        with torch.no_grad():
            for param, saved in zip(run.params, best["tensors"], strict=True):
                param.copy_(saved)
    t = run.config.train
    left = t.steps - step
    run.optimizer = torch.optim.AdamW(run.apt.trainable_parameters(), lr=RETRAIN_LR * t.lr, weight_decay=t.weight_decay)
    run.lr_schedule = linear_schedule(run.optimizer, left, int(RETRAIN_WARMUP * left))
    run.params = _optimizer_params(run.optimizer)
    run.retrain_best = None
    source = f"step {best['step']} (dev {best['score']:.4f})" if best else "the current model (no dev score since)"
    run.log.write(event="retrain", step=step, wall=run.wall(), reloaded_from=best["step"] if best else None,
                  lr=RETRAIN_LR * t.lr)
    run.proc.print(f"[aptune] step {step}: distillation ends; retraining from {source} at lr {RETRAIN_LR * t.lr:g}")


def _evaluate_teacher(run: Run, step: int, student: float | None) -> None:
    """The teacher's own dev metric, each time it is taken or refreshed, beside the student's score that made it
    the teacher (None for the first, taken at a pruning step). With ``distill.refresh=best`` the teacher runs with
    the masks off, so it is not the model whose score triggered it; with ``decay_start`` it is. A measurement, not training: off the clock, and the random state is put
    back, so the run is the same to the bit with or without it."""
    began = time.perf_counter()
    with torch.random.fork_rng(devices=[]), run.apt.teacher_view():
        metrics = _dev_metrics(run)
    run.start_time += time.perf_counter() - began
    name = run.task.primary_metric
    run.log.write(event="teacher_eval", step=step, wall=run.wall(), student=student, **metrics)
    trigger = f" (student {student:.4f})" if student is not None else ""
    run.proc.print(f"[aptune] step {step}: teacher dev {name} {metrics[name]:.4f}{trigger}")


# ---------------------------------------------------------------------------------------------- save


def save(run: Run, command: str | None = None) -> dict:
    """Export the merged, pruned model and write ``summary.json``; returns the summary."""
    train_time = run.wall()
    run.model.eval()
    task, main = run.task, run.proc.is_main_process
    if not run.history:  # train.steps=0: the one evaluation of the untuned model
        metrics = _dev_metrics(run)
        run.model.eval()
        run.history.append({"step": 0, "wall": run.wall(), **metrics, "density": run.apt.density()})
        run.log.write(event="eval", step=0, wall=run.history[-1]["wall"], **metrics)
    export = run.out / "export"
    if main:
        export = run.model.export(export, tokenizer=run.tokenizer, card=_card(run, command),
                                  dtype=export_dtype(run.config))
    cut_at = 0 if run.config.prune.cuts_before_tuning else run.apt.last_pruning_step
    after_prune = [h for h in run.history if h["step"] >= cut_at]
    summary = {
        "task": task.name, "primary_metric": task.primary_metric, "num_labels": task.num_labels,
        "final": run.history[-1], "higher_is_better": task.higher_is_better,
        "best_after_pruning": (max if task.higher_is_better else min)(
            (h[task.primary_metric] for h in after_prune), default=None),
        "params": run.model.num_params(), "original_params": run.model.original_params,
        "density": run.apt.density(), "train_time_s": train_time,
        "peak_rss_bytes": _peak_rss_bytes(), "ranks": run.model.ranks(), "export": str(export),
        "history": run.history, "pruning_accuracy": run.pruning_accuracy,
        "memory": run.memory.peak.as_dict() if run.memory.peak else None,
        "memory_breakdown": run.breakdown.as_dict(),
        "cuda_max_memory_allocated": torch.cuda.max_memory_allocated() if run.proc.device.type == "cuda" else None,
        "masks": run.model.state.keep_masks(), "provenance": run.provenance,
    }
    if main:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (run.out / f"masks.rank{run.proc.process_index}.json").write_text(json.dumps(summary["masks"]))
    return summary


def export_dtype(config: RunConfig) -> torch.dtype | None:
    """The export's dtype: ``export.dtype``, or None for the base's own."""
    return resolve_dtype(config.export.dtype) if config.export.dtype else None


def _card(run: Run, command: str | None) -> dict:
    """What the export's model card says beyond what the export folder records itself."""
    final = run.history[-1]
    return {
        "base_model": run.config.model.name, "task": run.task.name, "primary_metric": run.task.primary_metric,
        "metrics": {k: v for k, v in final.items() if k not in ("step", "wall", "density")},
        "density": run.apt.density(), "params": run.model.num_params(), "original_params": run.model.original_params,
        "command": command, "config": run.config.to_dict(),
    }
