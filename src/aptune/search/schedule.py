"""When to prune and how much: pruning steps, cubic density and soft-mask decay.

Step convention used throughout: ``step`` is the index of the training step being run, i.e. the number
of optimizer updates already done (HF Trainer's ``global_step`` before its increment). "Pruning at step p"
means: after the step with index p−1 has updated the optimizer (``global_step`` becomes p).

The pieces (docs/method.md §D, §E, §F and the worked timeline in §G):

* :func:`pruning_steps`: N steps evenly spaced in (start, end]: ``linspace(start, end, N+1)`` without its
  first point, truncated to integers (SST-2: 811, 1423, …, 6315), the last one exactly ``end``;
* :func:`cubic_density`: ρ(t) = min(ρ0, ρT + (ρ0−ρT)·((end−t)/(end−warmup_end))³), so density stays at
  ρ0 during a warm-up plateau and is exactly ρT at ``end`` (the last pruning step);
* :func:`update_soft_masks`: keep-set masks +α, prune-set masks −α (α = 0.01), clipped to [0, 1], or
  exactly 0/1 on the last update before a cut;
* :class:`PruningSchedule`: all of it for one run.

The tuning budget that rank growth follows at the same steps lives with the tuning part
(``aptune.tuning.budget.RankBudget``), the distillation weight μ with the distillation part
(``aptune.distill.schedule.DistillSchedule``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from aptune.search.budget import KeepSet
from aptune.structures.masks import StructureState


def pruning_steps(total_steps: int, start: int, end: int, num_prunings: int, min_gap: int = 1) -> list[int]:
    """The ``num_prunings`` pruning steps, evenly spaced in (start, end].

    Args:
        total_steps: length of the run (the window must fit in it).
        start: first step of the pruning window (official: 200, after the warm-up tuning).
        end: last pruning step (official: 3 epochs for encoders/T5, 5 for LLaMA).
        num_prunings: N (official: 10, LLaMA 16).
        min_gap: smallest allowed distance between consecutive steps. The official code needs ≥ 200
            (mask decay takes 100 steps at α = 0.01, plus margin); too close and masks are cut before
            they have decayed, so a clear error beats a silently different method.
    """
    if num_prunings < 1:
        raise ValueError(f"num_prunings must be >= 1, got {num_prunings}")
    if not 0 <= start < end <= total_steps:
        raise ValueError(f"need 0 <= start < end <= total_steps; got start={start}, end={end}, total={total_steps}")
    points = torch.linspace(start, end, num_prunings + 1, dtype=torch.float64)[1:]
    steps = [int(math.floor(p)) for p in points.tolist()]
    steps[-1] = end  # exact, whatever the floating point does
    gaps = [b - a for a, b in zip([start] + steps[:-1], steps)]
    if min(gaps) < min_gap:
        raise ValueError(
            f"{num_prunings} pruning steps in ({start}, {end}] are only {min(gaps)} steps apart (minimum "
            f"{min_gap}); use fewer pruning steps or a longer pruning window"
        )
    return steps


def cubic_density(step: float, start_density: float, target_density: float, end: int, warmup_end: int) -> float:
    """ρ(t) = min(ρ0, ρT + (ρ0−ρT)·((end−t)/(end−warmup_end))³); ρT from ``end`` on.

    Args:
        step: t.
        start_density: ρ0 (1.0, or the pre-tuning density).
        target_density: ρT (e.g. 0.4 = 60% sparsity).
        end: the last pruning step, where ρ = ρT exactly.
        warmup_end: end of the plateau (start + sparsity-warm-up epochs); before it ρ = ρ0.
    """
    if step >= end:
        return float(target_density)
    if end <= warmup_end:  # no room for a cubic ramp: jump to the target at the end
        return float(start_density)
    frac = (end - step) / (end - warmup_end)
    return float(min(start_density, target_density + (start_density - target_density) * frac**3))


def update_soft_masks(state: StructureState, keep: KeepSet, alpha: float = 0.01, binary: bool = False) -> None:
    """Move every mask one step toward the keep set: +α for kept blocks, −α for the others, in [0, 1].

    The keep set is recomputed from the current salience at every call, so a partly decayed block can
    climb back (docs/method.md §D). ``binary=True`` sets the masks to exactly 0/1, the last update before
    a physical cut.
    """

    def moved(mask: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        kept = kept.to(mask.dtype)
        if binary:
            return kept.clone()
        return torch.where(kept > 0, mask + alpha, mask - alpha).clamp(0.0, 1.0)

    state.set_masks(
        heads={n: moved(state.heads[n], keep.heads[n]) for n in state.heads},
        ffn={n: moved(state.ffn[n], keep.ffn[n]) for n in state.ffn},
        hidden=moved(state.hidden, keep.hidden),
    )


@dataclass
class PruningSchedule:
    """Every scheduled quantity of one run (serialisable with :meth:`to_dict`).

    Build it with :meth:`build`. Per step the trainer asks:

    * :meth:`mask_action` → None, ``"decay"`` or ``"binary"`` (after backward and the salience update);
    * :meth:`is_pruning_step` (after the optimizer step: cut, grow ranks, fix the optimizer);
    * :meth:`density_for` the k-th pruning step's target.
    """

    total_steps: int
    start: int
    end: int
    warmup_end: int
    start_density: float
    target_density: float
    steps: list[int] = field(default_factory=list)
    densities: list[float] = field(default_factory=list)
    decay_steps: int = 200
    alpha: float = 0.01

    @classmethod
    def build(cls, total_steps: int, start: int, end: int, num_prunings: int, target_density: float,
              start_density: float = 1.0, warmup_steps: int = 0, decay_steps: int = 200, alpha: float = 0.01,
              min_gap: int = 1) -> "PruningSchedule":
        """The schedule of one run.

        Args:
            total_steps: training steps of the run.
            start, end: pruning window (official: 200 and 3 epochs of steps).
            num_prunings: N pruning steps in (start, end].
            target_density: ρT; the last pruning step reaches it exactly.
            start_density: ρ0.
            warmup_steps: length of the no-pruning plateau after ``start`` (official: 1 epoch).
            decay_steps: masks decay during this many steps before a pruning step (official 200).
            alpha: soft-mask step (official 0.01).
            min_gap: see :func:`pruning_steps`.
        """
        if not 0 < target_density <= start_density <= 1:
            raise ValueError(f"need 0 < target_density <= start_density <= 1; got {target_density}, {start_density}")
        steps = pruning_steps(total_steps, start, end, num_prunings, min_gap)
        warmup_end = start + warmup_steps
        densities = [cubic_density(t, start_density, target_density, end, warmup_end) for t in steps]
        densities[-1] = float(target_density)
        return cls(total_steps, start, end, warmup_end, float(start_density), float(target_density), steps,
                   densities, int(decay_steps), float(alpha))

    # ------------------------------------------------------------------------------ queries
    @property
    def num_prunings(self) -> int:
        return len(self.steps)

    def density(self, step: float) -> float:
        """ρ(t) of the continuous cubic schedule."""
        return cubic_density(step, self.start_density, self.target_density, self.end, self.warmup_end)

    def is_pruning_step(self, step: int) -> bool:
        """True when ``step`` updates have been done and a pruning event is due now."""
        return step in self.steps

    def pruning_index(self, step: int) -> int:
        """k (1-based) of the pruning step ``step``, or of the next one if ``step`` is not one."""
        for k, s in enumerate(self.steps, start=1):
            if step <= s:
                return k
        return self.num_prunings + 1

    def next_pruning_step(self, step: int) -> int | None:
        """The first pruning step ≥ ``step`` (None after the last)."""
        return next((s for s in self.steps if s >= step), None)

    def density_for(self, k: int) -> float:
        """Target density of the k-th pruning step (1-based); ρ0 before the first."""
        return self.start_density if k < 1 else self.densities[min(k, self.num_prunings) - 1]

    def decay_starts(self) -> list[int]:
        """The steps (indices of the step about to run) at which the masks start moving toward a lower density:
        one per pruning step below ρ0, ``decay_steps`` before it but never before the previous pruning step."""
        starts = []
        for k, upcoming in enumerate(self.steps, start=1):
            if self.densities[k - 1] < self.start_density:
                previous = self.steps[k - 2] if k >= 2 else self.start
                starts.append(max(upcoming - self.decay_steps, previous))
        return starts

    def mask_action(self, step: int) -> str | None:
        """What the soft masks do during training step ``step`` (index of the step being run).

        ``"decay"`` in the ``decay_steps`` steps before a pruning step p (never before the previous
        pruning step), ``"binary"`` in step p−1, the last update before the cut, and None otherwise or
        when p's target density is still ρ0 (nothing to prune, docs/method.md §D).
        """
        upcoming = self.next_pruning_step(step + 1)
        if upcoming is None:
            return None
        k = self.steps.index(upcoming) + 1
        if self.densities[k - 1] >= self.start_density:
            return None
        previous = self.steps[k - 2] if k >= 2 else self.start
        if step == upcoming - 1:
            return "binary"
        if step >= max(upcoming - self.decay_steps, previous):
            return "decay"
        return None

    def to_dict(self) -> dict:
        return asdict(self)
