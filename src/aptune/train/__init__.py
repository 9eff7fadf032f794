"""``aptune train``: the recipe around :class:`aptune.APT` (``recipe.py``), its tasks and checkpoints."""

from aptune.train.recipe import train

__all__ = ["train"]
