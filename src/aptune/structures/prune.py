"""Physical pruning: cut every tensor that a zero mask entry makes dead (docs/method.md §A, §B).

* a KV group of an attention site: its query heads' rows of q, its rows of k and v (and of the adapters'
  B), its query heads' columns of o (and of o's adapter A); a site with no group left is replaced by an
  empty stand-in, so the layer falls back to the residual path;
* an FFN neuron: its row of up (and gate) and its column of down;
* a hidden dimension: the embedding column, the norm entries, the input column of every reader (q, k, v,
  up, gate, task head) and the output row of every writer (o, down).

After the cut the masks are reset to the survivors (all ones) and the original indices are composed, so
a model can be pruned again and again as training goes on.
"""

from __future__ import annotations

import torch
from torch import nn

from aptune.adapters.layer import APTLinear
from aptune.families.base import ModelFamily
from aptune.structures.masks import MaskedNorm, StructureState
from aptune.structures.standins import empty_attention, install_t5_bias_slicing, set_submodule


def _kept(mask: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{what} holds soft values; make the masks binary before pruning physically")
    return torch.nonzero(mask > 0, as_tuple=False).flatten()


def _linear(model: nn.Module, path: str) -> APTLinear:
    module = model.get_submodule(path)
    if not isinstance(module, APTLinear):
        raise TypeError(f"{path} is {type(module).__name__}; wrap the model with aptune first (APTModel)")
    return module


def group_channels(groups: torch.Tensor, width: int) -> torch.Tensor:
    """Channel indices of whole groups of ``width`` channels each."""
    return (groups[:, None] * width + torch.arange(width)[None, :]).flatten()


@torch.no_grad()
def prune_physically(family: ModelFamily, state: StructureState) -> dict:
    """Remove every structure whose mask is 0; returns how many groups/neurons/dims were removed."""
    model = family.model
    removed = {"heads": 0, "ffn": 0, "hidden": 0}
    for site in family.attention_sites:
        keep = _kept(state.heads[site.name], f"head mask of {site.name}")
        if len(keep) == len(state.heads[site.name]):
            continue
        q_channels = group_channels(keep, site.group_size * site.head_dim)
        kv_channels = group_channels(keep, site.head_dim)
        _linear(model, site.q).prune_outputs(q_channels)
        _linear(model, site.k).prune_outputs(kv_channels)
        _linear(model, site.v).prune_outputs(kv_channels)
        _linear(model, site.o).prune_inputs(q_channels)
        removed["heads"] += len(state.heads[site.name]) - len(keep)
        state.head_index[site.name] = state.head_index[site.name][keep]
        state.heads[site.name] = torch.ones(len(keep))
        attention = model.get_submodule(site.module)
        if len(keep) == 0:
            set_submodule(model, site.module, empty_attention(site.empty_kind, attention))
        elif site.empty_kind == "t5":
            install_t5_bias_slicing(attention, state.head_index[site.name])
    for site in family.ffn_sites:
        keep = _kept(state.ffn[site.name], f"neuron mask of {site.name}")
        if len(keep) == len(state.ffn[site.name]):
            continue
        for path in site.inputs:
            _linear(model, path).prune_outputs(keep)
        _linear(model, site.down).prune_inputs(keep)
        removed["ffn"] += len(state.ffn[site.name]) - len(keep)
        state.ffn_index[site.name] = state.ffn_index[site.name][keep]
        state.ffn[site.name] = torch.ones(len(keep))
    keep = _kept(state.hidden, "hidden mask")
    if len(keep) < len(state.hidden):
        _prune_hidden(family, keep)
        removed["hidden"] = len(state.hidden) - len(keep)
        state.hidden_index = state.hidden_index[keep]
        state.hidden = torch.ones(len(keep))
    return removed


def _prune_hidden(family: ModelFamily, keep: torch.Tensor) -> None:
    model = family.model
    cut: dict[int, nn.Parameter] = {}  # embeddings that share one weight (T5's shared/encoder/decoder) stay shared
    for path in family.hidden.embeddings:
        embedding = model.get_submodule(path)
        old = embedding.weight
        if id(old) not in cut:  # the masks live on the CPU, the weights wherever the model is
            cut[id(old)] = nn.Parameter(old.data.index_select(1, keep.to(old.device)).contiguous(), old.requires_grad)
        embedding.weight = cut[id(old)]
        embedding.embedding_dim = len(keep)
    for path in family.hidden.norms + family.hidden.extra_norms:
        norm = model.get_submodule(path)
        kept = keep.to(norm.weight.device)
        norm.weight = nn.Parameter(norm.weight.data[kept].contiguous(), norm.weight.requires_grad)
        if getattr(norm, "bias", None) is not None:
            norm.bias = nn.Parameter(norm.bias.data[kept].contiguous(), norm.bias.requires_grad)
        if isinstance(norm, MaskedNorm):
            norm.unwrap()  # keep the stock module's view of the parameters in step
        elif hasattr(norm, "normalized_shape"):
            norm.normalized_shape = (len(keep),)
    tied = dict(family.tied_embeddings)
    present = set(dict(model.named_modules()))  # q/k/v of an emptied attention block are gone
    for path in family.hidden.readers:
        if path not in present:
            continue
        linear = _linear(model, path)
        if path in tied:
            # the weight *is* the embedding matrix, already cut: re-share it, cut only the adapter
            linear.weight = model.get_submodule(tied[path]).weight
            kept = keep.to(linear.lora_A.device)
            linear.lora_A = nn.Parameter(linear.lora_A.data.index_select(1, kept), linear.lora_A.requires_grad)
        else:
            linear.prune_inputs(keep)
    for path in family.hidden.writers:
        if path in present:
            _linear(model, path).prune_outputs(keep)
