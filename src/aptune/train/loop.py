"""One training loop for APT and its ablations, top to bottom (apt_method.md §G).

Per step: (teacher forward) → student forward → loss (CE, or μ-mixed CE + self-distillation) → backward →
salience update → soft masks move toward the budgeted keep set → clip, optimizer and LR step → at a pruning
step: cut the pruned blocks from the tensors, grow the most salient adapters' ranks, and carry the AdamW
moments over (``OptimizerSurgery``) so the LR schedule simply continues. Every ablation is a config patch
(design.md), never a branch here: no pruning = ``prune.enabled=false``, fixed ranks =
``rank.strategy=none``, no distillation = ``distill.enabled=false``, other salience = ``prune.salience=...``.

Several processes (``accelerate launch --num_processes N``): each process trains on its shard of the
data; gradients and salience are averaged across processes after every backward, so every process makes
the same mask, pruning and rank decisions and holds the same weights (data parallelism with an explicit
all-reduce instead of a DDP wrapper, which would have to be rebuilt after every physical cut).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState
from tqdm.auto import tqdm

from aptune.config import RunConfig
from aptune.data import make_dataloader, seed_everything
from aptune.distill.self_distill import LayerTransform, distill_loss, mixed_loss, snapshot_teacher, teacher_mode
from aptune.model import AdapterConfig, APTModel
from aptune.models import load_model, load_tokenizer
from aptune.salience import AdapterImportance, build_scorer
from aptune.search import search_keep_set
from aptune.search.schedule import PruningSchedule, update_soft_masks
from aptune.train.checkpoint import latest_checkpoint, restore_structure, restore_training, save_checkpoint
from aptune.train.tasks import load_train_task
from aptune.tuning.optim_surgery import OptimizerSurgery
from aptune.tuning.rank_allocator import grow_ranks, tuning_params


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class JsonlLog:
    """One JSON object per line: the run's metrics file."""

    def __init__(self, path: Path):
        self.file = path.open("a")

    def write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


def _batches(loader):
    """Endless iteration over a loader, reshuffled each epoch."""
    epoch = 0
    while True:
        sampler = getattr(loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _all_reduce_mean(tensors) -> None:
    """Average tensors in place across processes (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= dist.get_world_size()


def _sync_scores(tracker) -> None:
    """Average a salience tracker's running scores across processes, so every process decides alike."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    tensors = {k: v.clone() for k, v in tracker.state_dict().items()}
    _all_reduce_mean([v for k, v in tensors.items() if v.is_floating_point()])
    tracker.load_state_dict(tensors)


def _prune_before_tuning(apt, scorer, loader, p, proc) -> dict:
    """One cut to the target density before any tuning (apt_method.md §D, the paper's large-model setting):
    salience from ``p.calibration_batches`` training batches (forward and backward, no optimizer step), then
    the budget search and a physical cut."""
    for _, batch in zip(range(p.calibration_batches), loader):
        apt(**batch).loss.backward()
        scorer.update()
        _sync_scores(scorer)
    apt.zero_grad(set_to_none=True)
    keep = search_keep_set(scorer.scores(), apt.state, apt.counter, int(p.density * apt.original_params),
                           round_to=p.round_to)
    apt.state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)
    removed = apt.prune()
    scorer.reindex()
    proc.print(f"[aptune] pruned before tuning from {p.calibration_batches} calibration batches: density "
               f"{apt.num_params() / apt.original_params:.3f}, removed {removed}")
    return removed


def train(config: RunConfig) -> dict:
    """Run one configured training; returns the summary (also written to ``summary.json``)."""
    # one process, or one of several under `accelerate launch` (gloo on CPU-only machines, NCCL on GPUs)
    proc = PartialState(cpu=not torch.cuda.is_available())
    main = proc.is_main_process
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        config.save(out / "config.yaml")
    log = JsonlLog(out / "metrics.jsonl" if main else Path("/dev/null"))
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)

    # ---- data and model --------------------------------------------------------------------------
    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    pad_id = tokenizer.pad_token_id
    shard = task.train[proc.process_index::proc.num_processes]
    loader = make_dataloader(shard, config.train.batch_size, pad_id, shuffle=True, seed=config.train.seed,
                             group_by_length=True, drop_last=True)
    batches = _batches(loader)
    a = config.adapter
    apt = APTModel(load_model(config.model.name, head=config.model.head, num_labels=task.num_labels),
                   AdapterConfig(list(a.targets), a.rank, a.scaling, a.train_head, a.train_base), seed=config.train.seed)
    apt.train()
    proc.print(f"[aptune] {task.name}: {len(task.train)} train / {len(task.eval)} eval examples from {task.source}")

    # ---- method components -----------------------------------------------------------------------
    steps = config.train.steps
    p = config.prune
    if steps == 0:  # evaluate and export only: the untuned model (after the one cut, with before_tuning)
        density = p.density if p.enabled else 1.0
        schedule = PruningSchedule(0, 0, 0, 0, start_density=density, target_density=density)
    else:
        schedule = PruningSchedule.build(
            total_steps=steps, start=min(p.start_step, steps - 1),
            end=max(int(p.end_fraction * steps), p.start_step + 1),
            num_prunings=p.num_steps, target_density=p.density if p.enabled else 1.0,
            # pruned once before tuning: the schedule then only carries the rank-growth steps
            start_density=p.density if (p.enabled and p.before_tuning) else 1.0,
            warmup_steps=int(p.warmup_fraction * steps), tuning_initial=tuning_params(apt),
            tuning_ratio=config.rank.budget_ratio, decay_steps=max(1, int(1.0 / p.mask_lr)) + 2, alpha=p.mask_lr,
        )
    if main:
        (out / "schedule.json").write_text(json.dumps(schedule.to_dict(), indent=1))
    scorer = build_scorer(p.salience, **({"kurtosis": p.kurtosis} if p.salience == "apt" else {})).attach(apt)
    if not p.enabled:
        scorer.detach()  # no pruning: its hooks would only cost time (its empty state still checkpoints)
    importance = AdapterImportance().attach(apt)
    distill = config.distill
    transform = LayerTransform(apt, rank=distill.transform_rank) if distill.enabled else None
    checkpoints = out / "checkpoints"
    resume_from = latest_checkpoint(checkpoints) if config.train.resume else None
    if config.train.resume and resume_from is None:
        proc.print(f"[aptune] no checkpoint in {checkpoints}; starting from scratch")
    resumed = restore_structure(apt, transform, resume_from) if resume_from else None
    if p.enabled and p.before_tuning and resumed is None:
        calibration = make_dataloader(shard, config.train.batch_size, pad_id, shuffle=True,
                                      seed=config.train.seed + 1, group_by_length=True, drop_last=True)
        removed = _prune_before_tuning(apt, scorer, calibration, p, proc)
        if transform is not None:
            transform.sync()
        log.write(event="prune_before_tuning", step=0, removed=removed, params=apt.num_params(),
                  density=apt.num_params() / apt.original_params, kept=apt.state.kept_sizes())
    max_rank = int(config.rank.max_rank_ratio * max(1, a.rank))
    params = [q for q in apt.parameters() if q.requires_grad]
    if transform is not None:
        params += [q for q in transform.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
    warmup = int(config.train.warmup_ratio * steps)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * max(0.0, (steps - s) / max(1, steps - warmup)))
    generator = torch.Generator().manual_seed(config.train.seed)

    # ---- loop ------------------------------------------------------------------------------------
    best, history, teacher_ready, first_step, elapsed_before = None, [], False, 0, 0.0
    pruning_accuracy = None
    if resumed is not None:
        first_step, elapsed_before = resumed["step"], resumed["wall"]
        for _ in range(first_step):  # the data order continues where it stopped (before the RNG is restored:
            next(batches)  # starting a DataLoader iterator draws from torch's global RNG)
        restore_training(resume_from, resumed, apt, transform, optimizer, lr_schedule, scorer, importance, generator)
        params = [q for group in optimizer.param_groups for q in group["params"]]
        best, history, teacher_ready = resumed["best"], resumed["history"], resumed["teacher_ready"]
        pruning_accuracy = resumed.get("pruning_accuracy")
        proc.print(f"[aptune] resumed from {resume_from} at step {first_step}")
    last_prune_step = schedule.steps[-1] if schedule.steps and p.enabled else 0
    start_time = time.perf_counter() - elapsed_before
    bar = tqdm(range(first_step, steps), desc="training", dynamic_ncols=True, disable=not main,
               initial=first_step, total=steps)
    for step in bar:
        step_start = time.perf_counter()
        batch = next(batches)
        # salience and adapter importance are collected from the first to the last pruning step
        collecting = schedule.start <= step < (schedule.steps[-1] if schedule.steps else 0)
        # self-distillation while pruning (μ rising 0→1 over the window); after the target density is reached
        # the model recovers on the task loss alone, as the official code does after its distillation phase
        distilling = distill.enabled and teacher_ready and step < last_prune_step
        mu = schedule.mu(step) if distilling else 0.0

        if mu > 0:
            with torch.no_grad(), teacher_mode(apt, masks=distill.teacher_masks):
                teacher_out = apt(**batch, output_hidden_states=True)
        student_out = apt(**batch, output_hidden_states=mu > 0)
        loss = student_out.loss
        parts = {}
        if mu > 0:
            dloss, parts = distill_loss(student_out, teacher_out, apt, distill, transform, generator,
                                        attention_mask=batch.get("attention_mask"))
            loss = mixed_loss(loss, dloss, mu)
        loss.backward()
        _all_reduce_mean([q.grad for q in params if q.grad is not None])

        if collecting:
            if p.enabled:
                scorer.update()
                _sync_scores(scorer)
            if config.rank.strategy == "salience":
                importance.update()
                _sync_scores(importance)
            action = schedule.mask_action(step) if p.enabled else None
            if action is not None:
                k = schedule.pruning_index(step + 1)
                keep = search_keep_set(scorer.scores(), apt.state, apt.counter,
                                       int(schedule.density_for(k) * apt.original_params), round_to=p.round_to)
                update_soft_masks(apt.state, keep, schedule.alpha, binary=action == "binary")
        torch.nn.utils.clip_grad_norm_(params, config.train.grad_clip)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if schedule.is_pruning_step(done):  # cut what the masks removed (nothing without pruning), grow ranks
            k = schedule.steps.index(done) + 1
            with OptimizerSurgery(optimizer, apt, *([transform] if transform else []),
                                  mode="reset" if config.train.optimizer_reset else "carry"):
                removed = apt.prune()
                if transform is not None:
                    transform.sync()
                ranks = grow_ranks(apt, importance.scores(), schedule.budget_for(k), config.rank.strategy, max_rank,
                                   generator)
            params = [q for group in optimizer.param_groups for q in group["params"]]
            scorer.reindex()  # follow the cut now, before the next step's observations arrive in the new shapes
            importance.reset()
            if p.enabled:
                proc.print(f"[aptune] pruning step {k}/{schedule.num_prunings} at step {done}: density "
                           f"{apt.num_params() / apt.original_params:.3f} (target {schedule.density_for(k):.3f}), "
                           f"removed {removed}; rank growth -> tuning params {tuning_params(apt):,}")
            elif config.rank.strategy != "none":
                proc.print(f"[aptune] rank-growth step {k}/{schedule.num_prunings} at step {done}: tuning params "
                           f"{tuning_params(apt):,}")
            log.write(event="prune", step=done, k=k, removed=removed, params=apt.num_params(),
                      density=apt.num_params() / apt.original_params, ranks=ranks, kept=apt.state.kept_sizes())
            if p.enabled and k == schedule.num_prunings:
                # "pruning accuracy": the dev metric at the target density, before any recovery training
                apt.eval()
                at_target = task.evaluate(apt.model)
                apt.train()
                log.write(event="eval_at_target", step=done, wall=time.perf_counter() - start_time, **at_target)
                pruning_accuracy = at_target[task.primary_metric]
            if distill.enabled and p.enabled and not teacher_ready:
                snapshot_teacher(apt)
                teacher_ready = True
                proc.print(f"[aptune] distillation starts at step {done} (teacher = snapshot of the adapters)")

        step_time = time.perf_counter() - step_start
        if done % config.train.log_every == 0 or done == steps:
            log.write(step=done, loss=float(loss.detach()), lr=lr_schedule.get_last_lr()[0], mu=mu,
                      params=apt.num_params(), density=apt.num_params() / apt.original_params,
                      tuning_params=tuning_params(apt), step_time=step_time, peak_rss=_peak_rss_bytes(),
                      wall=time.perf_counter() - start_time, **parts)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", density=f"{apt.num_params() / apt.original_params:.2f}")
        if done % config.train.eval_every == 0 or done == steps:
            apt.eval()
            metrics = task.evaluate(apt.model)
            apt.train()
            score = metrics[task.primary_metric]
            history.append({"step": done, "wall": time.perf_counter() - start_time, **metrics,
                            "density": apt.num_params() / apt.original_params})
            log.write(event="eval", step=done, wall=time.perf_counter() - start_time, **metrics)
            proc.print(f"[aptune] step {done}: dev {task.primary_metric} {score:.4f}")
            if task.better(score, best):
                best = score
                if distill.enabled and teacher_ready:
                    snapshot_teacher(apt)  # the teacher follows the best model so far
        every = config.train.checkpoint_every
        if (every and done % every == 0 and done < steps) or done == config.train.stop_after:
            if main:
                save_checkpoint(checkpoints, done, apt, transform, optimizer, lr_schedule, scorer, importance,
                                generator, {"best": best, "history": history, "teacher_ready": teacher_ready,
                                            "pruning_accuracy": pruning_accuracy,
                                            "wall": time.perf_counter() - start_time})
            proc.wait_for_everyone()
            if done == config.train.stop_after:
                proc.print(f"[aptune] stopping after step {done} as asked (train.stop_after)")
                return {"stopped_at": done}

    train_time = time.perf_counter() - start_time
    apt.eval()
    if not history:  # train.steps=0: the one evaluation of the untuned model
        metrics = task.evaluate(apt.model)
        history.append({"step": 0, "wall": time.perf_counter() - start_time, **metrics,
                        "density": apt.num_params() / apt.original_params})
        log.write(event="eval", step=0, wall=history[-1]["wall"], **metrics)
    export_dir = apt.export(out / "export", tokenizer=tokenizer) if main else out / "export"
    after_prune = [h for h in history if h["step"] >= last_prune_step]
    summary = {
        "task": task.name, "primary_metric": task.primary_metric, "num_labels": task.num_labels,
        "final": history[-1], "higher_is_better": task.higher_is_better,
        "best_after_pruning": (max if task.higher_is_better else min)(
            (h[task.primary_metric] for h in after_prune), default=None),
        "params": apt.num_params(), "original_params": apt.original_params,
        "density": apt.num_params() / apt.original_params, "train_time_s": train_time,
        "peak_rss_bytes": _peak_rss_bytes(), "ranks": apt.ranks(), "export": str(export_dir),
        "history": history, "pruning_accuracy": pruning_accuracy,
    }
    summary["masks"] = apt.state.keep_masks()
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / f"masks.rank{proc.process_index}.json").write_text(json.dumps(summary["masks"]))
    return summary
