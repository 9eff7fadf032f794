"""Batching: dynamic padding, length-grouped batches, and seeds.

API::

    seed_everything(0)
    loader = make_dataloader(task.train, batch_size=32, pad_token_id=tokenizer.pad_token_id,
                             shuffle=True, seed=0, group_by_length=True)
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)   # a new, reproducible order per epoch
        for batch in loader: ...                # dict of tensors, padded to the longest in the batch

:func:`collate` pads each batch only to its own longest sequence (dynamic padding): ``input_ids``
with the pad id, ``attention_mask`` and ``token_type_ids`` with 0, and sequence ``labels`` with -100 so
padding never carries loss. Scalar labels become a ``long`` tensor (classes) or a ``float`` tensor
(regression).

:class:`LengthGroupedBatchSampler` puts sequences of similar length in the same batch, which cuts the
padding (and the time spent on it) while keeping randomness: indices are shuffled, cut into
"mega-batches" of ``batch_size * mega_batch_factor``, each sorted by length and cut into batches,
and the batches shuffled again (the batch holding the longest sequence goes first, so an
out-of-memory error shows up at step one rather than hours in).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices), so a run with the same seed repeats itself."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def collate(
    batch: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Stack tokenized examples into tensors, padding sequences to the batch's longest.

    Args:
        batch: examples with ``input_ids`` and optionally ``attention_mask``, ``token_type_ids`` and
            ``labels`` (a list for language modelling, a number for classification/regression).
        pad_token_id: id used to pad ``input_ids``.
        pad_to_multiple_of: round the padded length up (helps tensor cores on a GPU).
        padding_side: ``"right"`` (training) or ``"left"`` (generation).

    Returns:
        ``{key: tensor}`` for every key of the examples; an ``attention_mask`` is added when absent.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    longest = max(len(example["input_ids"]) for example in batch)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    keys = list(batch[0].keys())
    if "attention_mask" not in keys:
        keys.append("attention_mask")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        if key == "attention_mask" and key not in batch[0]:
            values = [[1] * len(example["input_ids"]) for example in batch]
        else:
            values = [example[key] for example in batch]
        if key == "labels" and not isinstance(values[0], (list, tuple, torch.Tensor)):
            dtype = torch.float32 if any(isinstance(value, float) for value in values) else torch.long
            out[key] = torch.tensor(values, dtype=dtype)
            continue
        pad_value = pad_token_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
        padded = torch.full((len(batch), longest), pad_value, dtype=torch.long)
        for row, value in enumerate(values):
            value = torch.as_tensor(value, dtype=torch.long)
            if padding_side == "right":
                padded[row, : value.numel()] = value
            else:
                padded[row, longest - value.numel() :] = value
        out[key] = padded
    return out


class Collator:
    """A picklable ``collate_fn`` for ``DataLoader`` (worker processes need a top-level callable)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, padding_side: str = "right"):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_token_id, self.pad_to_multiple_of, self.padding_side)


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices whose sequences have similar lengths, in a seeded random order.

    Args:
        lengths: length of each example.
        batch_size: examples per batch.
        shuffle: ``False`` gives batches sorted by length, longest first (evaluation).
        seed: base seed; the order of epoch ``e`` uses ``seed + e`` (see :meth:`set_epoch`).
        drop_last: drop a final batch smaller than ``batch_size``.
        mega_batch_factor: mega-batch size in batches; larger groups lengths more tightly but makes the
            order less random.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        mega_batch_factor: int = 50,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.mega_batch_factor = max(1, mega_batch_factor)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` next (same seed and epoch, same batches)."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        count = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(count), key=lambda index: -self.lengths[index])
            batches = [order[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        else:
            rng = random.Random(self.seed + self.epoch)
            order = list(range(count))
            rng.shuffle(order)
            mega = self.batch_size * self.mega_batch_factor
            batches = []
            for start in range(0, count, mega):
                group = sorted(order[start : start + mega], key=lambda index: -self.lengths[index])
                batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
            rng.shuffle(batches)
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]), default=0)
            if batches:
                batches[0], batches[longest] = batches[longest], batches[0]
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        # Every mega-batch but the last is a whole number of batches, so only one batch can be short.
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return -(-len(self.lengths) // self.batch_size)


def make_dataloader(
    examples: Sequence[Mapping[str, Any]],
    batch_size: int,
    pad_token_id: int,
    shuffle: bool = False,
    seed: int = 0,
    group_by_length: bool = False,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over tokenized examples with dynamic padding.

    Args:
        examples: tokenized examples (``TaskData.train`` etc.).
        batch_size: examples per batch.
        pad_token_id: the tokenizer's pad id.
        shuffle: random order (seeded by ``seed``).
        seed: seed of the order; reproducible across runs.
        group_by_length: use :class:`LengthGroupedBatchSampler` (its ``set_epoch`` changes the order).
        drop_last: drop the last incomplete batch.
        num_workers: loader worker processes.
        pin_memory: page-locked batches, so that copies to a GPU overlap with compute (``non_blocking``).
    """
    collator = Collator(pad_token_id)
    if group_by_length:
        sampler = LengthGroupedBatchSampler(
            [len(example["input_ids"]) for example in examples], batch_size, shuffle=shuffle, seed=seed,
            drop_last=drop_last,
        )
        return torch.utils.data.DataLoader(
            examples, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers, pin_memory=pin_memory
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        examples, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=collator,
        generator=generator, num_workers=num_workers, pin_memory=pin_memory,
    )
