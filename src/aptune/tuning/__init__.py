"""Adaptive tuning: adapter rank growth, its budget, and keeping the optimizer consistent across shape changes."""

from aptune.tuning.budget import RankBudget, linear_budget
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
    "RankBudget",
    "carry_over_cut",
    "carry_over_growth",
    "grow_ranks",
    "linear_budget",
    "reset_optimizer_state",
    "tuning_params",
    "unwrap_optimizer",
]
