"""Adaptive tuning: grow adapter ranks where they matter, at pruning steps (docs/method.md §E).

Tuning parameters are counted as P = Σ_adapters (d_in + d_out)·r over the adapters' current (possibly
pruned) shapes. At a pruning step with budget N_k (linear N0 → 4·N0, see ``search.schedule``):

* ``"salience"`` (APT, official ``tophalf_limited``): candidates are the adapters below the rank cap,
  sorted by importance; the first ⌊#all adapters / 2⌋ of them (half of *all* adapters) grow by the common
  factor g = (N_k − P)/S_top + 1, S_top = Σ (d_in+d_out)·r over them: r' = min(⌊r·g⌋, cap);
* ``"uniform"`` (the "w/o salience" ablation): every adapter r' = ⌊r·N_k/P⌋, no cap (as the official code);
* ``"none"`` (the "w/o A_T" ablation and fixed-rank runs): nothing changes.

Growing appends random rows to A and zero columns to B (``APTLinear.grow_rank``), so outputs do not
change. Ranks never shrink. New Parameters replace the old ones: run this inside
``tuning.optim_surgery.OptimizerSurgery`` so AdamW follows.
"""

from __future__ import annotations

import math

import torch

STRATEGIES = ("salience", "uniform", "none")


def tuning_params(apt_model) -> int:
    """P = Σ (d_in + d_out)·r over the model's adapters."""
    return sum((m.in_features + m.out_features) * m.rank for m in apt_model.adapters().values())


def grow_ranks(apt_model, importance: dict[str, float], budget: int, strategy: str = "salience",
               max_rank: int | None = None, generator: torch.Generator | None = None) -> dict[str, int]:
    """Grow adapter ranks toward ``budget`` tuning parameters; returns the new rank pattern {path: r}.

    Args:
        apt_model: the :class:`aptune.model.APTModel`.
        importance: adapter path -> importance (``AdapterImportance.scores()``); missing = 0.
        budget: N_k, the tuning-parameter budget at this pruning step.
        strategy: "salience", "uniform" or "none".
        max_rank: rank cap for "salience" (default 8·r0, r0 = the configured initial rank: 64 at r0 = 8).
        generator: seeds the new A rows (reproducible runs).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown rank-growth strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    adapters = apt_model.adapters()
    if strategy == "none" or not adapters:
        return apt_model.ranks()
    current = tuning_params(apt_model)
    if budget <= current or current == 0:
        return apt_model.ranks()
    if strategy == "uniform":
        factor = budget / current
        targets = {path: math.floor(m.rank * factor) for path, m in adapters.items()}
    else:
        cap = max_rank if max_rank is not None else 8 * apt_model.adapter_config.rank
        candidates = [path for path, m in adapters.items() if m.rank < cap]
        # stable order on ties: the model's module order
        order = sorted(range(len(candidates)), key=lambda i: (-float(importance.get(candidates[i], 0.0)), i))
        top = [candidates[i] for i in order[: len(adapters) // 2]]
        size_top = sum((adapters[p].in_features + adapters[p].out_features) * adapters[p].rank for p in top)
        if size_top == 0:
            return apt_model.ranks()
        factor = (budget - current) / size_top + 1.0
        targets = {path: min(math.floor(adapters[path].rank * factor), cap) for path in top}
    for path, rank in targets.items():
        module = adapters[path]
        if rank > module.rank:
            module.grow_rank(rank, generator)
    return apt_model.ranks()
