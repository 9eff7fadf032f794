"""When self-distillation weighs how much: μ rises from 0 to 1 over the pruning window (docs/method.md §F).

The loss is μ·L_distill + (1−μ)·L_CE, so training starts on the task loss alone and ends the pruning window
on the distillation loss alone (addendum; the official code's comment says the opposite direction, its
formula agrees with this one, pitfall J12).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


def mu_at(step: float, start: int, end: int) -> float:
    """Distillation weight μ = clip((t − start)/(end − start), 0, 1)."""
    if end <= start:
        return 1.0 if step >= end else 0.0
    return float(min(1.0, max(0.0, (step - start) / (end - start))))


@dataclass
class DistillSchedule:
    """μ over one run: 0 at ``start`` (the pruning window's start), 1 at ``end`` (its last pruning step)."""

    start: int
    end: int

    def mu(self, step: float) -> float:
        return mu_at(step, self.start, self.end)

    def to_dict(self) -> dict:
        return asdict(self)
