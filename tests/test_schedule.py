"""Pruning schedule, soft masks, tuning budget, μ; and the budgeted keep-set search."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from aptune.distill.schedule import DistillSchedule, mu_at
from aptune.model import APTModel
from aptune.search import (
    PruningSchedule,
    cubic_density,
    pruning_steps,
    search_keep_set,
    update_soft_masks,
)
from aptune.tuning.budget import RankBudget, linear_budget

SST2 = dict(total_steps=84_200, start=200, end=6315, num_prunings=10, target_density=0.4, warmup_steps=2105)


def test_pruning_steps_match_the_official_timeline():
    schedule = PruningSchedule.build(**SST2)
    assert schedule.steps == [811, 1423, 2034, 2646, 3257, 3869, 4480, 5092, 5703, 6315]
    assert [round(d, 3) for d in schedule.densities] == [1.0, 1.0, 1.0, 0.86, 0.666, 0.536, 0.457, 0.417, 0.402, 0.4]


@pytest.mark.parametrize("n,end,target,warmup", [(10, 6315, 0.4, 2105), (16, 5000, 0.7, 400), (3, 97, 0.25, 0),
                                                 (1, 50, 0.5, 10)])
def test_schedule_reaches_the_target_density_at_the_last_pruning_step(n, end, target, warmup):
    schedule = PruningSchedule.build(total_steps=end + 100, start=0, end=end, num_prunings=n,
                                     target_density=target, warmup_steps=warmup)
    assert len(schedule.steps) == n and schedule.steps[-1] == end
    assert schedule.densities[-1] == target
    assert schedule.density(end) == target and schedule.density(end + 50) == target
    assert all(a >= b for a, b in zip(schedule.densities, schedule.densities[1:]))  # never prunes back up
    assert all(0 < a < b for a, b in zip(schedule.steps, schedule.steps[1:]))
    for t in range(0, warmup + 1, max(1, warmup // 7)):
        assert schedule.density(t) == 1.0  # warm-up plateau


def test_cubic_density_formula():
    assert cubic_density(3000, 1.0, 0.4, end=6315, warmup_end=2305) == pytest.approx(
        0.4 + 0.6 * ((6315 - 3000) / (6315 - 2305)) ** 3)
    assert cubic_density(100, 0.9, 0.4, 6315, 2305) == 0.9


def test_pruning_steps_are_evenly_spaced_and_validated():
    assert pruning_steps(1000, 100, 500, 4) == [200, 300, 400, 500]
    with pytest.raises(ValueError, match="apart"):
        pruning_steps(1000, 100, 500, 4, min_gap=200)
    with pytest.raises(ValueError):
        pruning_steps(400, 100, 500, 4)


def test_mask_actions_decay_then_binary_right_before_the_cut():
    schedule = PruningSchedule.build(**SST2)
    assert schedule.mask_action(2000) is None  # density still 1.0 at the next pruning step (2034)
    assert [schedule.mask_action(t) for t in (2445, 2446, 2644, 2645, 2646)] == [None, "decay", "decay", "binary", None]
    assert schedule.is_pruning_step(2646) and not schedule.is_pruning_step(2645)
    assert schedule.mask_action(6314) == "binary" and schedule.mask_action(6315) is None
    # short gaps: decay never starts before the previous pruning step
    short = PruningSchedule.build(total_steps=400, start=0, end=300, num_prunings=3, target_density=0.5)
    assert [short.mask_action(t) for t in (0, 98, 99, 100, 199)] == ["decay", "decay", "binary", "decay", "binary"]


def test_soft_mask_update_moves_by_alpha_clips_and_goes_binary():
    apt = APTModel(TINY["llama"](), seed=0)
    state = apt.state
    g = torch.Generator().manual_seed(0)
    scores = {"heads": {n: torch.rand(len(m), generator=g) for n, m in state.heads.items()},
              "ffn": {n: torch.rand(len(m), generator=g) for n, m in state.ffn.items()},
              "hidden": torch.rand(len(state.hidden), generator=g)}
    keep = search_keep_set(scores, state, apt.counter, int(0.6 * apt.original_params))
    update_soft_masks(state, keep, alpha=0.25)
    assert torch.equal(state.hidden, torch.where(keep.hidden > 0, 1.0, 0.75))
    for _ in range(5):
        update_soft_masks(state, keep, alpha=0.25)
    assert torch.equal(state.hidden, keep.hidden)  # clipped at 0 and 1
    state.set_masks(hidden=torch.full_like(state.hidden, 0.5))
    update_soft_masks(state, keep, binary=True)
    assert state.is_binary() and torch.equal(state.hidden, keep.hidden)
    for n in state.heads:
        assert torch.equal(state.heads[n], keep.heads[n])


def test_tuning_budget_and_mu():
    schedule = PruningSchedule.build(**SST2)
    budget = RankBudget(initial=1000, ratio=4.0, num_steps=schedule.num_prunings)
    assert budget.budget_for(0) == 1000 and budget.budget_for(10) == 4000 and budget.budget_for(5) == 2500
    assert linear_budget(3, 10, 663_552, 4.0) == int(663_552 * 1.9)
    mu = DistillSchedule(schedule.start, schedule.end)
    assert mu.mu(0) == 0 and mu.mu(200) == 0 and mu.mu(6315) == 1 and mu.mu(9000) == 1
    assert mu_at(150, 100, 200) == pytest.approx(0.5)
    assert schedule.to_dict()["steps"] == schedule.steps


# -------------------------------------------------------------------------------------- search


def _densities(apt, scores):
    """(kind, site, index, density) for every block, density = score / block cost."""
    counter, state = apt.counter, apt.state
    sizes = state.sizes()
    d = sizes["hidden"]
    out = [("heads", n, i, float(s) / counter.group_cost(n, d))
           for n, v in scores["heads"].items() for i, s in enumerate(v)]
    out += [("ffn", n, i, float(s) / counter.neuron_cost(n, d))
            for n, v in scores["ffn"].items() for i, s in enumerate(v)]
    hidden_cost = counter.hidden_dim_cost(sizes["heads"], sizes["ffn"])
    out += [("hidden", "", i, float(s) / hidden_cost) for i, s in enumerate(scores["hidden"])]
    return out


def _count(apt, keep, extra=None):
    heads = {n: int(m.sum()) for n, m in keep.heads.items()}
    ffn = {n: int(m.sum()) for n, m in keep.ffn.items()}
    hidden = int(keep.hidden.sum())
    if extra is not None:
        kind, site, _, _ = extra
        if kind == "heads":
            heads[site] += 1
        elif kind == "ffn":
            ffn[site] += 1
        else:
            hidden += 1
    return apt.counter.count(heads, ffn, hidden)


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("density", [0.9, 0.6, 0.3])
def test_search_stays_under_budget_and_the_next_block_would_break_it(kind, density):
    apt = APTModel(TINY[kind](), seed=0)
    g = torch.Generator().manual_seed(int(density * 100))
    state = apt.state
    scores = {"heads": {n: torch.rand(len(m), generator=g) for n, m in state.heads.items()},
              "ffn": {n: torch.rand(len(m), generator=g) for n, m in state.ffn.items()},
              "hidden": torch.rand(len(state.hidden), generator=g) * 50}
    budget = int(density * apt.original_params)
    keep = search_keep_set(scores, state, apt.counter, budget)
    assert keep.params == _count(apt, keep) <= budget
    blocks = _densities(apt, scores)
    kept = [b for b in blocks if (keep.hidden[b[2]] if b[0] == "hidden" else getattr(keep, b[0])[b[1]][b[2]]) > 0]
    pruned = [b for b in blocks if b not in kept]
    assert pruned, "the budget should force some pruning"
    assert min(b[3] for b in kept) >= max(b[3] for b in pruned)  # a density-sorted prefix
    following = max(pruned, key=lambda b: b[3])
    assert _count(apt, keep, following) > budget
