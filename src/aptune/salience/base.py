"""What every structure scorer shares: the interface, the EMA, re-indexing after cuts, and helpers.

A scorer answers "how important is each block *now*" in the model's current physical shapes:

    {"heads": {site: tensor[groups]}, "ffn": {site: tensor[neurons]}, "hidden": tensor[d]}

which is exactly what :func:`aptune.search.budget.search_keep_set` takes. Scorers only *observe* the model
(hooks that return nothing, reads of weights); they never change outputs, gradients or parameters.

Blocks are tracked by their original indices (``StructureState.head_index`` etc.), so when the model is
physically pruned the running averages follow the survivors by themselves: :meth:`Salience.reindex` keeps
the entries whose original index is still present, as the official scorer does after a cut (docs/method.md §C).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from aptune.families.base import ModelFamily
from aptune.structures.masks import StructureState

BETA = 0.85  # docs/method.md §C: EMA S̄ ← 0.85·S̄ + 0.15·Ŝ, from 0, no bias correction


# ------------------------------------------------------------------------------------ small helpers


def ema_update(previous: torch.Tensor, new: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """``beta·previous + (1−beta)·new`` (no bias correction, as in the paper and AdaLoRA)."""
    return beta * previous + (1.0 - beta) * new


def kurtosis(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Excess kurtosis ``mean(z⁴) − 3`` along ``dim``, z-scored with ``torch.std`` (unbiased).

    Where the standard deviation is 0 the z-scores are taken as 0 (kurtosis −3), as the official code
    does; callers clamp at 0 before the square root, so constant rows add nothing.
    """
    x = x.to(torch.float64)
    if x.shape[dim] < 2:  # std is undefined for one sample: treat as constant
        return torch.full_like(x.sum(dim), -3.0)
    mean = x.mean(dim, keepdim=True)
    std = x.std(dim, keepdim=True)
    z = torch.where(std > 0, (x - mean) / torch.where(std > 0, std, torch.ones_like(std)), torch.zeros_like(x))
    return z.pow(4).mean(dim) - 3.0


def outlier_term(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``sqrt(max(kurtosis, 0))`` along ``dim``: the outlier bonus of docs/method.md §C."""
    return kurtosis(x, dim).clamp_min(0).sqrt()


def positions_of(old_index: torch.Tensor, new_index: torch.Tensor) -> torch.Tensor:
    """Positions in ``old_index`` of the entries still listed in ``new_index`` (both original indices)."""
    return torch.nonzero(torch.isin(old_index, new_index), as_tuple=False).flatten()


def effective_weight(module: nn.Module) -> torch.Tensor:
    """``W + s·B·A`` of an APTLinear (``W`` of any other linear), detached, float32.

    ∂L/∂W equals ∂L/∂W_eff and the outputs are W_eff·x, so scores built on W_eff see the adapter too.
    """
    weight = module.weight.detach().to(torch.float32)
    if getattr(module, "rank", 0) > 0 and weight.numel() > 0:
        weight = weight + module.delta_weight().detach().to(torch.float32)
    return weight


def try_module(model: nn.Module, path: str) -> nn.Module | None:
    """``model.get_submodule(path)`` or None (q/k/v vanish when an attention block loses every head)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def token_mask_for(masks: dict[str, torch.Tensor | None], stack: str, x: torch.Tensor) -> torch.Tensor | None:
    """The padding mask that matches activation ``x`` (batch, tokens, channels), or None.

    Decoder sites of encoder-decoders read ``decoder_attention_mask``, everything else ``attention_mask``;
    a mask whose shape does not match the activation (e.g. cached generation) is ignored.
    """
    key = "decoder_attention_mask" if stack == "decoder" else "attention_mask"
    mask = masks.get(key)
    if mask is None or x.dim() < 2 or tuple(mask.shape) != tuple(x.shape[:-1]):
        return None
    return mask


def masked_flat(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` as (tokens, channels) float32, padding rows zeroed when a mask is given."""
    flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
    if mask is not None:
        flat = flat * mask.reshape(-1, 1).to(device=flat.device, dtype=flat.dtype)
    return flat


def channel_groups(values: torch.Tensor, groups: int) -> torch.Tensor:
    """Sum a per-channel vector over contiguous groups of equal width (the head groups of an o input)."""
    if groups == 0:
        return values.new_zeros(0)
    return values.reshape(groups, -1).sum(1)


def zero_scores(state: StructureState) -> dict:
    """All-zero scores in the state's current shapes (float32)."""
    return {
        "heads": {n: torch.zeros(len(m)) for n, m in state.heads.items()},
        "ffn": {n: torch.zeros(len(m)) for n, m in state.ffn.items()},
        "hidden": torch.zeros(len(state.hidden)),
    }


# --------------------------------------------------------------------------------------- interface


class Salience(ABC):
    """Base class of the structure scorers.

    Life cycle (the trainer calls, in this order, every training step while collecting)::

        scorer.attach(apt_model)          # once; registers hooks if the scorer needs any
        loss.backward()
        scorer.update()                   # after backward, before optimizer.step()/clipping
        keep = search_keep_set(scorer.scores(), apt_model.state, apt_model.counter, budget)
        ...
        apt_model.prune()                 # scores follow the cut by themselves (reindex)
        scorer.detach()                   # removes hooks

    Args:
        beta: EMA factor (0.85 in the paper).
    """

    name = ""

    def __init__(self, beta: float = BETA):
        self.beta = beta
        self.apt = None
        self.family: ModelFamily | None = None
        self.state: StructureState | None = None
        self.ema: dict | None = None
        self.steps = 0  # number of updates folded into the EMA
        self._index: dict | None = None  # original indices the EMA entries refer to

    # ---------------------------------------------------------------------------- life cycle
    def attach(self, apt_model) -> "Salience":
        """Start observing ``apt_model`` (an :class:`aptune.model.APTModel`)."""
        self.apt = apt_model
        self.family = apt_model.family
        self.state = apt_model.state
        if self.ema is None:
            self.ema = zero_scores(self.state)
            self._index = self._current_index()
        return self

    def detach(self) -> None:
        """Stop observing (remove hooks); the running scores are kept."""

    def update(self) -> bool:
        """Fold this step's observations into the scores; returns False if there was nothing to fold."""
        self.reindex()
        step = self.step_scores()
        if step is None:
            return False
        step = _on_cpu(step)  # the method decides on CPU (masks, search), whatever device the model trains on
        self.ema = {
            "heads": {n: ema_update(v, step["heads"][n], self.beta) for n, v in self.ema["heads"].items()},
            "ffn": {n: ema_update(v, step["ffn"][n], self.beta) for n, v in self.ema["ffn"].items()},
            "hidden": ema_update(self.ema["hidden"], step["hidden"], self.beta),
        }
        self.steps += 1
        return True

    @abstractmethod
    def step_scores(self) -> dict | None:
        """This step's raw scores Ŝ (current shapes), or None when nothing was observed."""

    def scores(self) -> dict:
        """Block scores in the current physical shapes (copies; safe to modify)."""
        self.reindex()
        return _clone_scores(self.ema)

    # ------------------------------------------------------------------------------ cuts
    def _current_index(self) -> dict:
        state = self.state
        return {
            "heads": {n: i.clone() for n, i in state.head_index.items()},
            "ffn": {n: i.clone() for n, i in state.ffn_index.items()},
            "hidden": state.hidden_index.clone(),
        }

    def reindex(self) -> bool:
        """Follow a physical cut: keep the EMA entries whose original index survived. True if it cut."""
        if self.state is None or self._index is None:
            return False
        state, changed = self.state, False
        for kind, current in (("heads", state.head_index), ("ffn", state.ffn_index)):
            for name, new in current.items():
                old = self._index[kind][name]
                if len(old) != len(new) or not torch.equal(old, new):
                    keep = positions_of(old, new)
                    self.ema[kind][name] = self.ema[kind][name][keep]
                    self._index[kind][name] = new.clone()
                    self.on_cut(kind, name, keep)
                    changed = True
        old = self._index["hidden"]
        if len(old) != len(state.hidden_index) or not torch.equal(old, state.hidden_index):
            keep = positions_of(old, state.hidden_index)
            self.ema["hidden"] = self.ema["hidden"][keep]
            self._index["hidden"] = state.hidden_index.clone()
            self.on_cut("hidden", "", keep)
            changed = True
        if changed:
            self.clear_pending()
        return changed

    def on_cut(self, kind: str, site: str, keep: torch.Tensor) -> None:
        """Hook for subclasses with extra per-block state (called once per cut structure)."""

    def clear_pending(self) -> None:
        """Drop observations gathered since the last update (they refer to the old shapes)."""

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-friendly): the EMA, its original indices and the step count."""
        self.reindex()
        out = {"steps": torch.tensor(self.steps), "hidden": self.ema["hidden"], "index/hidden": self._index["hidden"]}
        for kind in ("heads", "ffn"):
            for name, value in self.ema[kind].items():
                out[f"{kind}/{name}"] = value
                out[f"index/{kind}/{name}"] = self._index[kind][name]
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output; entries are re-based onto the attached model's current
        structures, so a checkpoint taken before a cut loads into the cut model."""
        if self.state is None:
            raise RuntimeError("attach the scorer to a model before loading its state")
        self.steps = int(tensors["steps"])
        self.ema = {"heads": {}, "ffn": {}, "hidden": tensors["hidden"].float().clone()}
        self._index = {"heads": {}, "ffn": {}, "hidden": tensors["index/hidden"].long().clone()}
        for kind, names in (("heads", self.state.heads), ("ffn", self.state.ffn)):
            for name in names:
                self.ema[kind][name] = tensors[f"{kind}/{name}"].float().clone()
                self._index[kind][name] = tensors[f"index/{kind}/{name}"].long().clone()
        self.reindex()


def _on_cpu(scores: dict) -> dict:
    return {"heads": {n: v.cpu() for n, v in scores["heads"].items()},
            "ffn": {n: v.cpu() for n, v in scores["ffn"].items()}, "hidden": scores["hidden"].cpu()}


def _clone_scores(scores: dict) -> dict:
    return {
        "heads": {n: v.clone() for n, v in scores["heads"].items()},
        "ffn": {n: v.clone() for n, v in scores["ffn"].items()},
        "hidden": scores["hidden"].clone(),
    }


# ------------------------------------------------------------------------- block aggregation


def aggregate_blocks(family: ModelFamily, state: StructureState, matrices: dict[str, torch.Tensor],
                     biases: dict[str, torch.Tensor] | None = None) -> dict:
    """Sum per-entry non-negative scores of weight matrices into block scores.

    A block owns (docs/method.md §A): for a KV group, its rows of q, k, v and its columns of o; for a
    neuron, its row of every FFN input projection and its column of down; for a hidden dimension, its
    column of every reader (q, k, v, up, gate) and its row of every writer (o, down) in every layer.
    Bias entries follow their rows. Linears missing from ``matrices`` contribute nothing.

    Args:
        matrices: path -> (d_out, d_in) non-negative tensor (current shapes).
        biases: path -> (d_out,) non-negative tensor.
    """
    biases = biases or {}
    out = zero_scores(state)
    hidden = out["hidden"]

    def rows(path: str, width: int) -> torch.Tensor | None:
        if path not in matrices or matrices[path].shape[0] == 0:
            return None
        per_row = matrices[path].sum(1)
        if path in biases:
            per_row = per_row + biases[path]
        return per_row.reshape(-1, width).sum(1)

    for site in family.attention_sites:
        groups = len(state.heads[site.name])
        q_width, kv_width = site.group_size * site.head_dim, site.head_dim
        total = torch.zeros(groups)
        for path, width in ((site.q, q_width), (site.k, kv_width), (site.v, kv_width)):
            part = rows(path, width)
            if part is not None:
                total += part.cpu()
        if site.o in matrices and matrices[site.o].shape[1] > 0:
            total += matrices[site.o].sum(0).reshape(groups, q_width).sum(1).cpu()
        out["heads"][site.name] = total
    for site in family.ffn_sites:
        total = torch.zeros(len(state.ffn[site.name]))
        for path in site.inputs:
            part = rows(path, 1)
            if part is not None:
                total += part.cpu()
        if site.down in matrices and matrices[site.down].shape[1] > 0:
            total += matrices[site.down].sum(0).cpu()
        out["ffn"][site.name] = total
    site_readers = [p for s in family.attention_sites for p in (s.q, s.k, s.v)]
    site_readers += [p for s in family.ffn_sites for p in s.inputs]
    for path in site_readers:
        if path in matrices and matrices[path].shape[0] > 0:
            hidden += matrices[path].sum(0).cpu()
    for path in [s.o for s in family.attention_sites] + [s.down for s in family.ffn_sites]:
        if path in matrices and matrices[path].shape[1] > 0:
            per_row = matrices[path].sum(1)
            if path in biases:
                per_row = per_row + biases[path]
            hidden += per_row.cpu()
    return out


def site_linears(family: ModelFamily) -> list[str]:
    """Every projection of every attention and FFN site (the budgeted matrices)."""
    paths = [p for s in family.attention_sites for p in s.linears]
    paths += [p for s in family.ffn_sites for p in (*s.inputs, s.down)]
    return paths
