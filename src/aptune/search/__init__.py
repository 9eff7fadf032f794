"""How much to prune and when: the budgeted keep-set search and the schedules."""

from aptune.search.budget import Block, EmptyKeepSetError, KeepSet, blocks_of, layer_floor, search_keep_set
from aptune.search.schedule import (
    PruningSchedule,
    cubic_density,
    pruning_steps,
    update_soft_masks,
)

__all__ = [
    "Block",
    "EmptyKeepSetError",
    "KeepSet",
    "PruningSchedule",
    "blocks_of",
    "layer_floor",
    "cubic_density",
    "pruning_steps",
    "search_keep_set",
    "update_soft_masks",
]
