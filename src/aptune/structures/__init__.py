"""Prunable structures: masks over heads, FFN neurons and hidden dimensions; physical pruning; counting."""

from aptune.structures.masks import MaskedNorm, StructureState
from aptune.structures.params import ParamCounter
from aptune.structures.prune import prune_physically

__all__ = ["MaskedNorm", "ParamCounter", "StructureState", "prune_physically"]
