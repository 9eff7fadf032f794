"""How many tuning parameters the adapters may hold at each rank-growth step (docs/method.md §E).

The budget rises linearly from N0, the adapters' parameters at the start, to ``ratio``·N0 (official: 4) at
the last growth step. Growth happens at the pruning steps (the same ``k = 1..N``), so that a cut and the
growth it pays for share one optimizer surgery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


def linear_budget(k: int, num_steps: int, initial: float, ratio: float) -> int:
    """Tuning budget at the k-th of N growth steps (k = 1..N): N0 + (ratio−1)·N0·k/N; ratio·N0 at k = N."""
    if num_steps < 1:
        return int(initial)
    k = max(0, min(k, num_steps))
    return int(initial + (ratio - 1.0) * initial * k / num_steps)


@dataclass
class RankBudget:
    """The linear tuning budget of one run.

    Attributes:
        initial: N0, the trainable adapter parameters at the start (``tuning_params``).
        ratio: the budget reaches ``ratio``·N0 at the last growth step.
        num_steps: N, the growth steps (one per pruning step).
    """

    initial: int
    ratio: float = 4.0
    num_steps: int = 0

    def budget_for(self, k: int) -> int:
        """Adapter parameter budget at the k-th growth step (1-based; N0 before the first)."""
        return linear_budget(k, self.num_steps, self.initial, self.ratio)

    def to_dict(self) -> dict:
        return asdict(self)
