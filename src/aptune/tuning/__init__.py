"""Adaptive tuning: adapter rank growth, and keeping the optimizer consistent across shape changes."""

from aptune.tuning.optim_surgery import (
    OptimizerSurgery,
    carry_over_cut,
    carry_over_growth,
    reset_optimizer_state,
    unwrap_optimizer,
)
from aptune.tuning.rank_allocator import STRATEGIES, grow_ranks, tuning_params

__all__ = [
    "STRATEGIES",
    "OptimizerSurgery",
    "carry_over_cut",
    "carry_over_growth",
    "grow_ranks",
    "reset_optimizer_state",
    "tuning_params",
    "unwrap_optimizer",
]
