"""Adapter importance for rank growth (docs/method.md §C "Adapter (tuning) salience", §E, pitfall J13).

Per adapter and rank slot k: |Σ_j A_kj·∂L/∂A_kj| (``APTLinear.rank_score``; the sum over the input
dimension comes before the absolute value), EMA-smoothed with β=0.85 on every collecting step. An
adapter's importance is the *mean* over its rank slots (ranks differ between adapters, so a sum would
favour the big ones). The EMAs restart after every rank growth.
"""

from __future__ import annotations

import torch

from aptune.salience.base import BETA, ema_update


class AdapterImportance:
    """EMA of per-rank adapter scores, by adapter path.

    Call :meth:`update` after ``loss.backward()`` and before gradient clipping / ``optimizer.step()``
    (it reads ``lora_A.grad``), :meth:`scores` at a pruning step, :meth:`reset` after growing ranks.
    """

    def __init__(self, beta: float = BETA):
        self.beta = beta
        self.apt = None
        self.ema: dict[str, torch.Tensor] = {}

    def attach(self, apt_model) -> "AdapterImportance":
        self.apt = apt_model
        return self

    def update(self) -> None:
        for path, module in self.apt.adapters().items():
            if module.lora_A.grad is None:
                continue
            score = module.rank_score().detach().float().cpu()
            previous = self.ema.get(path)
            if previous is None or previous.shape != score.shape:  # new adapter or a rank changed
                previous = torch.zeros_like(score)
            self.ema[path] = ema_update(previous, score, self.beta)

    def scores(self) -> dict[str, float]:
        """Mean over rank slots of the EMA, for every adapter (0 for one never updated)."""
        return {
            path: float(self.ema[path].mean()) if path in self.ema and len(self.ema[path]) else 0.0
            for path in self.apt.adapters()
        }

    def reset(self) -> None:
        self.ema = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {path: value.clone() for path, value in self.ema.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.ema = {path: value.float().clone() for path, value in tensors.items()}
