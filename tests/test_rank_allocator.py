"""Rank growth: the budget is met, the right adapters grow, outputs do not change."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, randomize_adapters, tiny_inputs

from aptune.model import APTModel
from aptune.tuning import grow_ranks, tuning_params


def make(kind):
    apt = APTModel(TINY[kind](), seed=0)
    randomize_adapters(apt)
    return apt


def importance_for(apt, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {path: float(torch.rand((), generator=g)) for path in apt.adapters()}


def size(module):
    return module.in_features + module.out_features


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
def test_growth_meets_the_budget_and_keeps_outputs(kind):
    apt = make(kind)
    apt.eval()
    inputs = tiny_inputs(kind)
    with torch.no_grad():
        before = apt(**inputs).logits
    importance = importance_for(apt)
    old = apt.ranks()
    budget = int(1.6 * tuning_params(apt))
    ranks = grow_ranks(apt, importance, budget, generator=torch.Generator().manual_seed(0))
    adapters = apt.adapters()
    top = sorted(old, key=lambda p: -importance[p])[: len(old) // 2]
    grown = {p for p in ranks if ranks[p] > old[p]}
    assert grown == set(top)  # exactly the more important half
    assert all(ranks[p] == old[p] for p in old if p not in top)
    used = tuning_params(apt)
    assert used <= budget
    assert used > budget - sum(size(adapters[p]) for p in top)  # within one rank per grown adapter (floor)
    with torch.no_grad():
        after = apt(**inputs).logits
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5)  # only float rounding differs
    assert ranks == apt.ranks()


def test_growth_factor_is_common_and_capped():
    apt = make("llama")
    importance = importance_for(apt, seed=1)
    current = tuning_params(apt)
    budget = 3 * current
    old = apt.ranks()
    ranks = grow_ranks(apt, importance, budget, max_rank=20)
    top = sorted(old, key=lambda p: -importance[p])[: len(old) // 2]
    s_top = sum(size(apt.adapters()[p]) * old[p] for p in top)
    factor = (budget - current) / s_top + 1
    for path in top:
        assert ranks[path] == min(math.floor(old[path] * factor), 20)
    # adapters at the cap are no longer candidates; the half is still counted over all adapters
    again = grow_ranks(apt, importance, 5 * current, max_rank=20)
    capped = [p for p in top if ranks[p] == 20]
    assert all(again[p] == 20 for p in capped)
    assert sum(again[p] > ranks[p] for p in again) <= len(old) // 2


def test_uniform_and_none_strategies():
    apt = make("llama")
    old = apt.ranks()
    current = tuning_params(apt)
    assert grow_ranks(apt, {}, 2 * current, strategy="none") == old
    assert grow_ranks(apt, {}, current - 1) == old  # budget already used: nothing to grow
    ranks = grow_ranks(apt, {}, int(2.5 * current), strategy="uniform")
    assert all(r == math.floor(old[p] * int(2.5 * current) / current) for p, r in ranks.items())
    assert tuning_params(apt) <= int(2.5 * current)
    with pytest.raises(ValueError, match="strategy"):
        grow_ranks(apt, {}, current, strategy="adalora")


def test_growth_after_a_cut_counts_the_pruned_shapes():
    from conftest import random_binary_masks

    apt = make("llama")
    random_binary_masks(apt, seed=2, empty_site=False)
    apt.prune()
    current = tuning_params(apt)
    assert current == sum(size(m) * m.rank for m in apt.adapters().values())
    grow_ranks(apt, importance_for(apt), 2 * current)
    assert current < tuning_params(apt) <= 2 * current
