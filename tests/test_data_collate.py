"""Dynamic padding, length-grouped batches and seeds."""

from __future__ import annotations

import random

import torch

from aptune.data import Collator, LengthGroupedBatchSampler, collate, make_dataloader, seed_everything


def _examples(lengths, lm=False):
    examples = []
    for index, length in enumerate(lengths):
        ids = list(range(10, 10 + length))
        example = {"input_ids": ids, "attention_mask": [1] * length}
        example["labels"] = [-100] + ids[1:] if lm else index % 3
        examples.append(example)
    return examples


def test_collate_pads_to_the_longest_in_the_batch():
    batch = collate(_examples([3, 5, 2]), pad_token_id=0)
    assert batch["input_ids"].shape == (3, 5)
    assert batch["input_ids"][2].tolist() == [10, 11, 0, 0, 0]
    assert batch["attention_mask"][2].tolist() == [1, 1, 0, 0, 0]
    assert batch["labels"].tolist() == [0, 1, 2] and batch["labels"].dtype == torch.long


def test_collate_pads_sequence_labels_with_minus_100_and_supports_left_padding():
    batch = collate(_examples([2, 4], lm=True), pad_token_id=7, padding_side="left", pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"][0].tolist() == [-100] * 6 + [-100, 11]
    assert batch["input_ids"][0].tolist() == [7] * 6 + [10, 11]
    assert batch["attention_mask"][0].sum() == 2


def test_regression_labels_are_float_and_missing_mask_is_added():
    batch = collate([{"input_ids": [1, 2], "labels": 3.5}, {"input_ids": [4], "labels": 1.0}], pad_token_id=0)
    assert batch["labels"].dtype == torch.float32
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_length_grouped_sampler_covers_everything_once_and_groups_lengths():
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=3, mega_batch_factor=8)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(index for batch in batches for index in batch) == list(range(1000))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first

    def padding(batches_):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches_)

    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    random_batches = [shuffled[i : i + 16] for i in range(0, 1000, 16)]
    assert padding(batches) < 0.25 * padding(random_batches)
    assert list(LengthGroupedBatchSampler(lengths, 16, seed=3, mega_batch_factor=8)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    dropped = LengthGroupedBatchSampler(lengths, 16, seed=3, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 62


def test_dataloader_is_reproducible_with_a_seed():
    examples = _examples([random.Random(i).randint(1, 30) for i in range(50)])
    first = [batch["labels"].tolist() for batch in make_dataloader(examples, 8, 0, shuffle=True, seed=5)]
    second = [batch["labels"].tolist() for batch in make_dataloader(examples, 8, 0, shuffle=True, seed=5)]
    assert first == second
    grouped = make_dataloader(examples, 8, 0, shuffle=True, seed=5, group_by_length=True)
    assert sum(batch["input_ids"].shape[0] for batch in grouped) == 50
    assert isinstance(grouped.collate_fn, Collator)


def test_seed_everything_repeats_random_draws():
    seed_everything(11)
    first = (random.random(), torch.rand(3).tolist())
    seed_everything(11)
    assert (random.random(), torch.rand(3).tolist()) == first
