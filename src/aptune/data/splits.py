"""Seeded, order-preserving splits and subsets of example lists.

Both keep the original file order inside each part, so a subset or split is easy to compare with the
file, and both depend only on the seed and the list length: the same seed gives the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split_examples(examples: Sequence[T], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Seeded random split into ``(train, eval)``; each part keeps the original order.

    ``eval`` gets ``round(len * eval_fraction)`` examples (at least one when the fraction is positive).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    count = len(examples)
    eval_count = max(1, round(count * eval_fraction)) if eval_fraction > 0 and count > 1 else 0
    eval_indices = set(random.Random(seed).sample(range(count), eval_count))
    train = [example for index, example in enumerate(examples) if index not in eval_indices]
    evaluation = [example for index, example in enumerate(examples) if index in eval_indices]
    return train, evaluation


def subsample(examples: Sequence[T], max_samples: int | None, seed: int) -> list[T]:
    """A seeded random subset of at most ``max_samples`` examples, in the original order."""
    if max_samples is None or max_samples >= len(examples):
        return list(examples)
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    keep = sorted(random.Random(seed).sample(range(len(examples)), max_samples))
    return [examples[index] for index in keep]
