"""``APT``: adaptive pruning and tuning as one object that any training loop drives.

The object owns every decision of the method (docs/method.md §G): the salience scorer and adapter
importance, the pruning schedule and keep-set search, the soft masks, the pruning steps, rank growth, the
optimizer surgery that follows a shape change, and the distillation losses. The loop keeps what is
the loop's: data, optimizer, LR schedule, gradient clipping, evaluation, checkpoints::

    model = APTModel.from_pretrained("minilm", num_labels=2)
    apt = APT(model, APTConfig(), total_steps=1000)
    optimizer = torch.optim.AdamW(apt.trainable_parameters(), lr=5e-4)
    for batch in batches:
        apt.compute_loss(batch).loss.backward()   # CE, or the μ-mix with self-distillation while pruning
        apt.after_backward()                      # salience and adapter importance
        optimizer.step(); optimizer.zero_grad()
        apt.after_optimizer_step(optimizer)       # soft masks; at a pruning step: cut, grow ranks, fix AdamW
    model.export("out")

Every call works on the model's current shapes; after a pruning step the optimizer already holds the new
Parameters (same optimizer object and param groups, so an LR scheduler built on it continues), and the
returned :class:`PruningEvent` tells the loop that the set of trainable tensors changed.

Several processes (``accelerate launch``): salience and adapter importance are averaged across processes
after every update, so every process takes the same mask, pruning and growth decisions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist

from aptune.config import APTConfig
from aptune.distill.recovery import recovery_loss, teacher_outputs
from aptune.distill.schedule import DistillSchedule
from aptune.distill.self_distill import (TRANSFORM_RANK, LayerTransform, distill_loss, mixed_loss, snapshot_teacher,
                                        teacher_mode)
from aptune.model import APTModel
from aptune.salience import AdapterImportance, build_scorer
from aptune.search import KeepSet, layer_floor, search_keep_set
from aptune.search.schedule import PruningSchedule, update_soft_masks
from aptune.structures.refit import refit_writers
from aptune.tuning.budget import RankBudget
from aptune.tuning.optim_surgery import OptimizerSurgery
from aptune.tuning.rank_allocator import grow_ranks, tuning_params


# ------------------------------------------------------------------------------- several processes


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_across_processes(tensors: Iterable[torch.Tensor]) -> None:
    """Average tensors in place across processes (no-op in a single process)."""
    if not distributed():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()


def _require_grad(module, args, output):
    """Forward hook: the output asks autograd for its gradient (the embeddings', while every weight is frozen)."""
    return output.requires_grad_(True)


def _sync_scores(tracker) -> None:
    """Average a salience tracker's running scores across processes, so every process decides alike."""
    if not distributed():
        return
    tensors = {k: v.clone() for k, v in tracker.state_dict().items()}
    average_across_processes([v for v in tensors.values() if v.is_floating_point()])
    tracker.load_state_dict(tensors)


# ----------------------------------------------------------------------------------------- results


@dataclass
class APTLoss:
    """What :meth:`APT.compute_loss` returns: the loss to minimise and how it was made."""

    loss: torch.Tensor
    outputs: Any  # the student's model output
    mu: float = 0.0  # weight of the distillation loss (0: cross-entropy only)
    parts: dict[str, float] = field(default_factory=dict)  # the distillation terms, for logs


@dataclass
class PruningEvent:
    """What happened at a pruning step (also a rank-growth step; without pruning only ranks grow)."""

    step: int  # optimizer steps done
    k: int  # 1-based index of the pruning step
    num_steps: int
    pruned: bool  # pruning is enabled (False: a rank-growth step only)
    removed: dict[str, int]
    ranks: dict[str, int]
    params: int
    density: float
    target_density: float
    tuning_params: int
    reached_target: bool  # the last pruning step: the model now has its target density
    distillation_started: bool  # the teacher was taken for the first time


# -------------------------------------------------------------------------------------------- APT


class APT:
    """Adaptive pruning and tuning of one :class:`APTModel`.

    Args:
        model: the wrapped model (adapters, masks, physical pruning).
        config: the method's settings (:class:`aptune.config.APTConfig`).
        total_steps: optimizer steps the loop will run (the schedules are laid out over them; 0: no
            tuning, only the one cut of ``prune.before_tuning``).
        seed: seeds the draws of the method itself (distillation layers, new adapter rows).
    """

    def __init__(self, model: APTModel, config: APTConfig | None = None, total_steps: int = 1000, seed: int = 0):
        self.model = model
        self.config = config or APTConfig()
        self.config.validate(total_steps)  # what a run config checks, for users who build the config in Python
        self.total_steps = int(total_steps)
        self.step = 0  # optimizer steps done
        self.best: float | None = None  # best dev score the teacher followed (reported, or scored at decay starts)
        self.teacher_ready = False
        p = self.config.prune
        self.schedule = _pruning_schedule(p, self.total_steps)
        self.rank_budget = RankBudget(tuning_params(model), self.config.rank.budget_ratio, self.schedule.num_prunings)
        self.mu_schedule = DistillSchedule(self.schedule.start, self.schedule.end)
        d = self.config.distill
        self.refresh_at_decay = d.enabled and p.enabled and d.refresh == "decay_start"
        self.retrain_step = int(d.retrain_from * self.total_steps) if d.retrain_from is not None else None
        self.max_rank = int(self.config.rank.max_rank_ratio * max(1, model.adapter_config.rank))
        self.scorer = build_scorer(p.salience, **({"kurtosis": p.kurtosis} if p.salience == "apt" else {})).attach(model)
        if not p.enabled:
            self.scorer.detach()  # no pruning: its hooks would only cost time (its empty state still checkpoints)
        self.importance = AdapterImportance().attach(model)
        self.transform = LayerTransform(model, rank=TRANSFORM_RANK) if d.enabled else None
        # recover.teacher=dense: the model as received, merged and frozen before the cut (docs/method.md §F2)
        self.recovery_teacher = model.merged_model() if self.config.recover.enabled else None
        self.generator = torch.Generator().manual_seed(seed)
        self._kept_before = model.state.kept_sizes()  # what the previous pruning step left
        self.refit_errors: dict[str, dict[str, float]] = {}  # per writer, after a cut with prune.refit

    # ------------------------------------------------------------------------------------ queries
    @property
    def last_pruning_step(self) -> int:
        """The step at which the target density is reached (0 without pruning)."""
        return self.schedule.steps[-1] if self.schedule.steps and self.config.prune.enabled else 0

    def collecting(self) -> bool:
        """Salience and adapter importance are gathered from the first to the last pruning step."""
        return self.schedule.start <= self.step < (self.schedule.steps[-1] if self.schedule.steps else 0)

    def mu(self) -> float:
        """Weight of the distillation loss in this step. Self-distillation runs from the first teacher to the last
        pruning step (or, with ``distill.retrain_from``, to the retraining, at μ = 1 after the last pruning step);
        afterwards the model recovers on the task loss alone, as the official code does after its distillation."""
        end = self.retrain_step or self.last_pruning_step
        distilling = self.config.distill.enabled and self.teacher_ready and self.step < end
        return self.mu_schedule.mu(self.step) if distilling else 0.0  # mu_at clips to [0, 1]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates: the model's trainable tensors, then the distillation transform's."""
        params = [q for q in self.model.parameters() if q.requires_grad]
        if self.transform is not None:
            params += [q for q in self.transform.parameters() if q.requires_grad]
        return params

    def zero_grad(self) -> None:
        """Drop the gradients of every tensor the method trains, the distillation transform's included (a loop
        that zeroes only the model's, as ``transformers.Trainer`` does, would let the transform's accumulate)."""
        for param in self.trainable_parameters():
            param.grad = None

    def density(self) -> float:
        """Parameters the model holds now, as a share of the original (what memory and step time follow)."""
        return self.model.num_params() / self.model.original_params

    def kept_density(self) -> float:
        """Parameters the masks keep: what the model holds once masked blocks leave the tensors (under a dense
        teacher that is at the last pruning step; otherwise it equals :meth:`density` between decays)."""
        return self.model.num_kept_params() / self.model.original_params

    def schedules(self) -> dict:
        """Every scheduled quantity of the run, for ``schedule.json``."""
        return {**self.schedule.to_dict(), "rank_budget": self.rank_budget.to_dict(),
                "distill": self.mu_schedule.to_dict()}

    # ------------------------------------------------------------------------------- the step calls
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> APTLoss:
        """The loss to minimise for ``batch``: the model's own loss, or μ·distillation + (1−μ)·CE (from the
        model itself while pruning, or from the unpruned model after a cut before tuning)."""
        if self.recovery_teacher is not None:
            return self._recovery_loss(batch)
        mu = self.mu()
        if mu > 0:
            # refresh=best: the teacher runs on the unpruned backbone (masked blocks are still in the tensors, the
            # masks off); refresh=decay_start: with the student's masks, as the official encoder code runs it
            with torch.no_grad(), teacher_mode(self.model, masks=self.refresh_at_decay):
                teacher_out = self.model(**batch, output_hidden_states=True)
        student_out = self.model(**batch, output_hidden_states=mu > 0)
        loss, parts = _task_loss(student_out, batch), {}
        if mu > 0:
            dloss, parts = distill_loss(student_out, teacher_out, self.model, self.transform,
                                        self.generator, attention_mask=batch.get("attention_mask"))
            loss = mixed_loss(loss, dloss, mu)
        return APTLoss(loss, student_out, mu, parts)

    def _recovery_loss(self, batch: dict[str, torch.Tensor]) -> APTLoss:
        """w·KL(unpruned teacher ‖ student) + (1−w)·CE on the label positions (docs/method.md §F2)."""
        r = self.config.recover
        device = next(iter(batch.values())).device
        if next(self.recovery_teacher.parameters()).device != device:  # the loop moved the model after APT(...)
            self.recovery_teacher.to(device)
        target = teacher_outputs(self.recovery_teacher, batch)
        student_out = self.model(**batch)
        ce = _task_loss(student_out, batch)
        kd = recovery_loss(student_out.logits, target.logits, batch.get("labels"), r, self.model.is_causal_lm)
        loss = mixed_loss(ce, kd, r.weight)
        parts = {"kd": float(kd.detach()), "ce": float(ce.detach())}
        return APTLoss(loss, student_out, r.weight, parts)

    def after_backward(self) -> None:
        """Fold this step's observations into the block salience and the adapter importance.

        Call it after ``backward()`` (and after gradients are averaged across processes) and before gradient
        clipping: the adapter importance reads the adapters' raw gradients."""
        if not self.collecting():
            return
        if self.config.prune.enabled:
            self.scorer.update()
            _sync_scores(self.scorer)
        if self.config.rank.strategy == "salience":
            self.importance.update()
            _sync_scores(self.importance)

    def after_optimizer_step(self, optimizer=None) -> PruningEvent | None:
        """Move the soft masks; at a pruning step cut, grow ranks and carry ``optimizer`` across the change.

        Returns the :class:`PruningEvent` at a pruning step (the trainable tensors changed: the optimizer
        already holds the new ones), None otherwise."""
        self._move_soft_masks()
        self.step += 1
        if self.schedule.is_pruning_step(self.step):
            return self._pruning_step(optimizer)
        return None

    @property
    def has_teacher(self) -> bool:
        """Self-distillation is on and its first teacher has been taken (at the first pruning step)."""
        return self.config.distill.enabled and self.teacher_ready

    def teacher_view(self):
        """A context in which the model is the teacher as :meth:`compute_loss` runs it: the adapters' snapshot on
        the unpruned backbone (masks off; with ``distill.refresh=decay_start`` the student's masks on), in eval mode,
        without gradients; for measuring the teacher itself."""
        return teacher_mode(self.model, masks=self.refresh_at_decay)

    def report_score(self, score: float, higher_is_better: bool = True) -> bool:
        """Tell the method a dev score; on a new best the teacher becomes the current adapters. True if best.
        With ``distill.refresh=decay_start`` the teacher follows only :meth:`offer_teacher` (False here)."""
        if self.refresh_at_decay:
            return False
        improved = self.best is None or (score > self.best if higher_is_better else score < self.best)
        if improved:
            self.best = score
            if self.has_teacher:
                self._take_teacher()
        return improved

    def teacher_check_due(self) -> bool:
        """With ``distill.refresh=decay_start``: a mask decay toward a lower density starts with the next step, so
        the model is to be scored now and offered as the teacher (:meth:`offer_teacher`)."""
        return self.refresh_at_decay and self.step in self.schedule.decay_starts()

    def offer_teacher(self, score: float, higher_is_better: bool = True) -> bool:
        """The model as it is now scored ``score`` at a decay start: on a new best among these scores it becomes the
        teacher (its adapters snapshotted; the blocks it lacks are already cut). True if it did."""
        improved = self.best is None or (score > self.best if higher_is_better else score < self.best)
        if improved:
            self.best = score
            self._take_teacher()
            self.teacher_ready = True
        return improved

    # ------------------------------------------------------------------------------ pruning steps
    def _move_soft_masks(self) -> None:
        """In the decay window before a pruning step, masks move toward the budgeted keep set."""
        action = self.schedule.mask_action(self.step) if self.config.prune.enabled else None
        if action is None:
            return
        k = self.schedule.pruning_index(self.step + 1)
        keep = self._keep_set(self.schedule.density_for(k))
        update_soft_masks(self.model.state, keep, self.schedule.alpha, binary=action == "binary")

    def _keep_set(self, density: float) -> KeepSet:
        """The most salient blocks within ``density`` of the original parameters (and the layer floor)."""
        p, scores = self.config.prune, self.scorer.scores()
        protect = layer_floor(scores, self.model.state, p.layer_floor, p.round_to)  # {} at 0
        return search_keep_set(scores, self.model.state, self.model.counter, int(density * self.model.original_params),
                               protect=protect, round_to=p.round_to)

    def _cut_now(self, k: int) -> bool:
        """Blocks leave the tensors at every pruning step, except while distilling: the teacher runs on the unpruned
        backbone, so they stay until the last one, where distillation ends."""
        distilling = self.config.distill.enabled and self.config.prune.enabled and not self.refresh_at_decay
        return not distilling or k == self.schedule.num_prunings

    def _surgery(self, optimizer) -> OptimizerSurgery:
        """Carry ``optimizer``'s state across a change of the trainable tensors' shapes."""
        return OptimizerSurgery(optimizer, self.model, *([self.transform] if self.transform else []), mode="carry")

    def _pruning_step(self, optimizer) -> PruningEvent:
        k = self.schedule.steps.index(self.step) + 1
        removed = _removed_since(self._kept_before, self.model.state.kept_sizes())
        with self._surgery(optimizer):
            if self._cut_now(k):
                self.model.prune()
            if self.transform is not None:
                self.transform.sync()
            ranks = grow_ranks(self.model, self.importance.scores(), self.rank_budget.budget_for(k),
                               self.config.rank.strategy, self.max_rank, self.generator)
        self.scorer.reindex()  # follow the cut now, before the next step's observations arrive in the new shapes
        self.importance.reset()
        self._stop_observing_when_done()
        self._kept_before = self.model.state.kept_sizes()
        pruned = self.config.prune.enabled
        first_teacher = self.config.distill.enabled and pruned and not self.teacher_ready and not self.refresh_at_decay
        if first_teacher:
            self._take_teacher()
            self.teacher_ready = True
        kept = self.model.num_kept_params()  # what the model holds once masked blocks leave (now, or at the end)
        return PruningEvent(self.step, k, self.schedule.num_prunings, pruned, removed, ranks, kept,
                            kept / self.model.original_params, self.schedule.density_for(k),
                            tuning_params(self.model), pruned and k == self.schedule.num_prunings, first_teacher)

    def _stop_observing_when_done(self) -> None:
        """After the last pruning step no score is read again: the scorer's hooks leave the model, so the steps
        that remain do not keep its observations (the weight-gradient scorer's Gᵀ·X buffers, every step's inputs
        kept for them) or spend time on them. Nothing they observed was read, so no number moves."""
        if self.step >= self.last_pruning_step:
            self.scorer.detach()

    def _take_teacher(self) -> None:
        """The teacher's adapters from now on: a frozen copy of the current ones."""
        snapshot_teacher(self.model)

    def prune_before_tuning(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, int]:
        """One cut to the target density before any tuning (docs/method.md §D, the paper's large-model
        setting): salience from ``prune.calibration_batches`` batches (forward and backward, no optimizer
        step), then the budget search and a physical cut. Returns what was removed."""
        p = self.config.prune
        for _ in self.calibrate(batches, p.calibration_batches):
            pass
        keep = self._keep_set(p.density)
        self.model.state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)
        if p.refit:
            self.refit_errors = self.refit(itertools.islice(batches, p.calibration_batches))
        removed = self.model.prune()
        self.scorer.reindex()
        if self.transform is not None:
            self.transform.sync()
        self._kept_before = self.model.state.kept_sizes()
        return removed

    def refit(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
        """Least-squares refit of the kept columns of every o / down the binary masks thin (``prune.refit``,
        docs/method.md §D2), from no-grad passes in eval mode over ``batches``. Returns each writer's relative
        output error before and after."""
        training = self.model.training
        self.model.eval()
        try:
            return refit_writers(self.model.family, self.model.state, lambda batch: self.model(**batch), batches)
        finally:
            self.model.train(training)

    def calibrate(self, batches: Iterable[dict[str, torch.Tensor]], count: int) -> Iterator[int]:
        """Salience from the first ``count`` of ``batches`` (forward and backward, no optimizer step), for a cut
        before tuning. Yields the number of batches done after each, so that a caller can read the scores on
        the way (benchmarks/cut_loss.py compares calibration sizes); the gradients are cleared at the end.

        The scores need the gradients of activations only, so every trainable tensor is frozen for these
        passes and the embeddings' output asks for a gradient instead: an adapter that wants its own gradient
        makes autograd keep its linear's input, which on a decoder with adapters on every linear is a large part
        of the dense passes' memory. Every branch still carries its gradient to the activations (a frozen
        weight passes it on; only its own gradient is skipped), so the scores are the same
        (tests/test_calibration.py)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        embeddings = self.model.model.get_input_embeddings()
        handle = embeddings.register_forward_hook(_require_grad)
        try:
            for parameter in trainable:
                parameter.requires_grad_(False)
            for done, batch in enumerate(itertools.islice(batches, count), start=1):
                self.model(**batch).loss.backward()
                self.scorer.update()
                _sync_scores(self.scorer)
                yield done
        finally:
            handle.remove()
            for parameter in trainable:
                parameter.requires_grad_(True)
            self.model.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The method's whole state: counters, the salience and importance EMAs, the generator and the
        distillation transform. Tensors and plain values only (checkpoints split them into safetensors and
        JSON). The model's own state (weights, masks, ranks, teacher copies) is the model's."""
        state: dict[str, Any] = {
            "step": self.step, "best": self.best, "teacher_ready": self.teacher_ready,
            "scorer": self.scorer.state_dict(), "importance": self.importance.state_dict(),
            "generator": self.generator.get_state(), "kept_before": self._kept_before,
        }
        if self.transform is not None:
            state["transform"] = {"rank": self.transform.linear.rank,
                                  **{k: v.detach().cpu() for k, v in self.transform.state_dict().items()}}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the model must already have the shapes it had then (checkpoints
        restore the model first)."""
        self.step, self.best, self.teacher_ready = int(state["step"]), state["best"], bool(state["teacher_ready"])
        self.scorer.load_state_dict(state["scorer"])
        self.importance.load_state_dict(state["importance"])
        self.generator.set_state(state["generator"])
        self._kept_before = state.get("kept_before") or self.model.state.kept_sizes()
        self._stop_observing_when_done()  # a run resumed after its last pruning step
        if self.transform is not None:
            saved = dict(state["transform"])
            self.transform.sync()  # to the model's surviving hidden dimensions
            self.transform.linear.grow_rank(int(saved.pop("rank")))
            with torch.no_grad():
                for name, tensor in self.transform.state_dict().items():
                    tensor.copy_(saved[name])


def _task_loss(outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss for ``batch``; a clear error when the batch has no labels to take it from."""
    if outputs.loss is None:
        raise ValueError(f"the model returned no loss for a batch with keys {sorted(batch)}: a training batch needs "
                         "`labels` (class ids, scores, or token ids with -100 where no loss is taken)")
    return outputs.loss


def _removed_since(before: dict, now: dict) -> dict[str, int]:
    """Blocks gone between two ``kept_sizes()``: KV groups, FFN neurons, hidden dimensions."""
    return {"heads": sum(before["heads"].values()) - sum(now["heads"].values()),
            "ffn": sum(before["ffn"].values()) - sum(now["ffn"].values()),
            "hidden": before["hidden"] - now["hidden"]}


def _pruning_schedule(p, total_steps: int) -> PruningSchedule:
    """The pruning schedule of ``prune`` settings over ``total_steps`` steps (the window was validated)."""
    if total_steps == 0:  # evaluate and export only: the untuned model (after the one cut, with before_tuning)
        density = p.density if p.enabled else 1.0
        return PruningSchedule(0, 0, 0, 0, start_density=density, target_density=density)
    start, end = p.window(total_steps)
    return PruningSchedule.build(
        total_steps=total_steps, start=start, end=end,
        num_prunings=p.num_steps, target_density=p.density if p.enabled else 1.0,
        # pruned once before tuning: the schedule then only carries the rank-growth steps
        start_density=p.density if p.cuts_before_tuning else 1.0,
        warmup_steps=int(p.warmup_fraction * total_steps),
        decay_steps=max(1, int(1.0 / p.mask_lr)) + 2, alpha=p.mask_lr,
    )
