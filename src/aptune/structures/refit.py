"""Refit the writers of a cut: least-squares weights for the inputs a keep set leaves (docs/method.md §D2).

A cut removes inputs of the two linears that write into the residual stream: an FFN's down projection loses
the columns of its dropped neurons, an attention block's output projection those of its dropped KV groups. The
columns that stay were trained beside the others. For every such writer this module solves, on calibration tokens
of the unpruned model (input ``x_t``, dense output ``y_t = W x_t``, ``x_t,S`` the kept part of the input),

    min_A  sum_t ||A x_t,S - y_t||^2  +  damp * m * ||A - W_S||^2

with ``m`` the mean diagonal of the kept inputs' Gram matrix. The ridge pulls
toward the old weights ``W_S``, not toward zero, so a column the data says little about keeps what it had. On
SmolLM2 at 70% (README, "Recovery at small scale") a ridge toward zero, or inputs taken from the cut model instead
of the dense one, made the held-out loss worse than no refit at all; weighting each token by its relative error
made no difference at the chosen ridge.

Only the frozen base weights of kept columns change: removed columns are cut away afterwards, the adapters (zero
at a cut before tuning) are not touched, and the masked model still computes exactly what the pruned one does.
Statistics in float32, the solve in float64; padding positions do not count. One no-grad dense pass per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from aptune.families.base import ModelFamily
from aptune.structures.masks import StructureState
from aptune.structures.prune import group_channels


@dataclass
class _Writer:
    """One linear that writes into the residual stream, the input columns its keep set leaves, and the sums."""

    path: str
    kept: torch.Tensor  # input columns that survive the cut
    gram: torch.Tensor | None = None  # sum_t x_t,S x_t,S^T
    rhs: torch.Tensor | None = None  # sum_t x_t,S y_t^T
    tokens: int = 0
    target_sq: float = 0.0  # sum_t ||y_t||^2: what the dense layer wrote
    before_sq: float = 0.0  # sum_t ||W_S x_t,S - y_t||^2: the cut's error with the old weights


def _writers(family: ModelFamily, state: StructureState) -> list[_Writer]:
    """Every writer whose input loses columns to the current (binary) masks and keeps at least one."""
    writers = []
    for site in family.attention_sites:
        groups = torch.nonzero(state.heads[site.name] > 0).flatten()
        width = site.group_size * site.head_dim
        if 0 < len(groups) < len(state.heads[site.name]):
            writers.append(_Writer(site.o, group_channels(groups, width)))
    for site in family.ffn_sites:
        kept = torch.nonzero(state.ffn[site.name] > 0).flatten()
        if 0 < len(kept) < len(state.ffn[site.name]):
            writers.append(_Writer(site.down, kept))
    return writers


@torch.no_grad()
def refit_writers(family: ModelFamily, state: StructureState, forward: Callable[[dict], object],
                  batches: Iterable[dict], damp: float = 0.3) -> dict[str, dict[str, float]]:
    """Refit the kept input columns of every writer the binary masks in ``state`` thin (module docstring).

    ``forward(batch)`` runs the model on a batch; ``batches`` are calibration batches. Returns, per writer, the
    relative output error ``sqrt(sum_t ||A x_t,S - y_t||^2 / sum_t ||y_t||^2)`` over their tokens with the old
    weights (``before``) and the refitted ones (``after``). The masks are the same afterwards."""
    if not state.is_binary():
        raise ValueError("refit_writers needs binary masks (a keep set); the masks hold soft values")
    writers = _writers(family, state)
    if not writers:
        return {}
    model = family.model
    masks = {"heads": dict(state.heads), "ffn": dict(state.ffn), "hidden": state.hidden}
    state.set_masks(heads={n: torch.ones_like(m) for n, m in state.heads.items()},
                    ffn={n: torch.ones_like(m) for n, m in state.ffn.items()}, hidden=torch.ones_like(state.hidden))
    valid: dict = {"positions": None}
    handles = [model.get_submodule(w.path).register_forward_pre_hook(_accumulating(w, valid)) for w in writers]
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            valid["positions"] = mask.bool() if mask is not None else None
            forward(batch)
    finally:
        for handle in handles:
            handle.remove()
        state.set_masks(**masks)
    return {w.path: _solve(model.get_submodule(w.path), w, damp) for w in writers}


def _accumulating(writer: _Writer, valid: dict):
    """A forward pre-hook that adds a dense pass's tokens to ``writer``'s sums (padding positions dropped)."""

    def hook(module, args):
        x = args[0].detach().to(torch.float32)
        x = x[valid["positions"]] if valid["positions"] is not None else x.reshape(-1, x.shape[-1])
        w = module.weight.detach().to(torch.float32)
        y = x @ w.T
        columns = writer.kept.to(x.device)
        kept = x[:, columns]
        writer.target_sq += float(y.pow(2).sum())
        writer.before_sq += float((kept @ w[:, columns].T - y).pow(2).sum())
        gram, rhs = kept.T @ kept, kept.T @ y
        writer.gram = gram if writer.gram is None else writer.gram + gram
        writer.rhs = rhs if writer.rhs is None else writer.rhs + rhs
        writer.tokens += x.shape[0]

    return hook


def _solve(linear: torch.nn.Module, writer: _Writer, damp: float) -> dict[str, float]:
    """Write the ridge solution into ``linear.weight``'s kept columns; returns the relative errors."""
    if writer.tokens == 0:
        raise ValueError("refit_writers got no calibration tokens (every position was padding, or no batches)")
    weight = linear.weight
    prior = weight.detach()[:, writer.kept.to(weight.device)].to(torch.float64).cpu().T  # W_S^T: (kept, out)
    gram, rhs = writer.gram.to(torch.float64).cpu(), writer.rhs.to(torch.float64).cpu()
    ridge = damp * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    solution = torch.linalg.solve(gram + ridge * eye, rhs + ridge * prior)  # A^T
    weight.data[:, writer.kept.to(weight.device)] = solution.T.to(device=weight.device, dtype=weight.dtype)
    # sum_t ||A x_t,S - y_t||^2 = tr(A G A^T) - 2 tr(A R) + sum_t ||y_t||^2
    after_sq = float((solution * (gram @ solution)).sum() - 2 * (solution * rhs).sum()) + writer.target_sq
    scale = max(writer.target_sq, 1e-30)
    return {"before": (writer.before_sq / scale) ** 0.5, "after": (max(after_sq, 0.0) / scale) ** 0.5}
