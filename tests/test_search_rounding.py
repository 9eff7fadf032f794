"""Rounding the kept sizes for aligned matmuls keeps the budget and drops only the least dense blocks."""

import torch
from conftest import tiny_llama

from aptune.model import APTModel
from aptune.search import search_keep_set


def test_round_to_gives_multiples_under_budget_and_a_subset_of_the_exact_set():
    apt = APTModel(tiny_llama())
    g = torch.Generator().manual_seed(0)
    scores = {"heads": {n: torch.rand(len(m), generator=g) for n, m in apt.state.heads.items()},
              "ffn": {n: torch.rand(len(m), generator=g) for n, m in apt.state.ffn.items()},
              "hidden": torch.rand(len(apt.state.hidden), generator=g)}
    budget = int(0.5 * apt.original_params)
    exact = search_keep_set(scores, apt.state, apt.counter, budget)
    rounded = search_keep_set(scores, apt.state, apt.counter, budget, round_to=8)
    assert rounded.params <= exact.params <= budget
    assert int(rounded.hidden.sum()) % 8 == 0
    for name, mask in rounded.ffn.items():
        assert int(mask.sum()) % 8 == 0
        assert bool((mask <= exact.ffn[name]).all())  # only removals
        dropped = (exact.ffn[name] - mask) > 0
        if dropped.any():  # the dropped ones are the least salient per parameter of those kept
            assert scores["ffn"][name][dropped].max() <= scores["ffn"][name][mask > 0].min()
    assert bool((rounded.hidden <= exact.hidden).all())
