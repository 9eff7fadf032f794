"""Stand-ins and module surgery that both aptune and its exports run: replacing a submodule by path, the
stand-ins for attention blocks left with no head, and T5's position-bias slicing for blocks with some heads cut.

Imports only torch: it is inlined into every export's ``modeling_aptune.py`` (``aptune.export.hf`` puts this
file's code in place of that file's import of it), where aptune is not installed. So the model aptune prunes
during training and the model an export rebuilds run the very same code.
"""

from __future__ import annotations

import torch
from torch import nn

# ---------------------------------------------------------------------------------- module surgery


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at the dotted ``path`` with ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


# ------------------------------------------------------------------------------ empty attention blocks


class EmptyBertSelfAttention(nn.Module):
    """Stands in for a BERT self-attention with no head left: a context of width 0.

    The output projection that follows then yields its bias only, as the masked model does."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


class EmptyLlamaAttention(nn.Module):
    """Stands in for a LLaMA attention block with no KV group left: o_proj of an empty context."""

    def __init__(self, o_proj: nn.Module):
        super().__init__()
        self.o_proj = o_proj

    def forward(self, hidden_states, *args, **kwargs):
        return self.o_proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


class EmptyT5Attention(nn.Module):
    """Stands in for a T5 attention with no head left. If it was the block that owns the relative
    position bias, it still computes the bias (for all original heads) for the layers after it."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.o = attention.o
        self.has_relative_attention_bias = attention.has_relative_attention_bias
        if self.has_relative_attention_bias:
            self.relative_attention_bias = attention.relative_attention_bias
            # the original block, for compute_bias and its bucket settings (not registered as a submodule)
            object.__setattr__(self, "_source", attention)
        self.layer_idx = attention.layer_idx

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = _t5_full_bias(self._source, hidden_states, key_value_states, cache)
        return self.o(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), position_bias, None


def empty_attention(kind: str, attention: nn.Module) -> nn.Module:
    """The stand-in for an attention module of family ``kind`` ('bert', 'llama', 't5') with no head."""
    if kind == "bert":
        return EmptyBertSelfAttention()
    if kind == "llama":
        return EmptyLlamaAttention(attention.o_proj)
    if kind == "t5":
        return EmptyT5Attention(attention)
    raise ValueError(f"unknown empty-attention kind {kind!r}")


# -------------------------------------------------------------------------------- T5 position bias


def _t5_full_bias(attention, hidden_states, key_value_states, cache):
    """The position bias for all original heads, as T5Attention.forward would compute it."""
    query_length = hidden_states.shape[1]
    past = cache.get_seq_length(attention.layer_idx) if cache is not None else 0
    if key_value_states is not None:
        key_length = key_value_states.shape[1]
    else:
        key_length = past + query_length
    if attention.has_relative_attention_bias:
        return attention.compute_bias(query_length, key_length, device=hidden_states.device, past_seen_tokens=past)
    return hidden_states.new_zeros(1, attention.n_heads, query_length, key_length)


def _t5_slice_bias_pre_hook(module, args, kwargs):
    hidden_states = args[0] if args else kwargs["hidden_states"]
    bias = kwargs.get("position_bias")
    if bias is None:
        bias = _t5_full_bias(module, hidden_states, kwargs.get("key_value_states"), kwargs.get("cache"))
    module._aptune_full_bias = bias
    kept = torch.tensor(module.aptune_kept_heads, dtype=torch.long, device=bias.device)
    kwargs["position_bias"] = bias.index_select(1, kept)
    return args, kwargs


def _t5_restore_bias_hook(module, args, kwargs, output):
    full = module.__dict__.pop("_aptune_full_bias", None)
    return (output[0], full, *output[2:])


def install_t5_bias_slicing(attention: nn.Module, kept_heads: torch.Tensor) -> None:
    """Make a T5 attention whose heads were cut read its heads' slice of the shared position bias.

    ``kept_heads`` are the surviving heads' indices among the original ``n_heads``. The relative bias
    table stays whole (it is tiny) and the full bias is passed on to the next layer unchanged."""
    # a plain attribute, not a buffer: from_pretrained re-materialises buffers after __init__
    already_installed = hasattr(attention, "aptune_kept_heads")
    kept = kept_heads.tolist() if isinstance(kept_heads, torch.Tensor) else kept_heads
    attention.aptune_kept_heads = tuple(int(i) for i in kept)
    if already_installed:
        return
    attention.register_forward_pre_hook(_t5_slice_bias_pre_hook, with_kwargs=True)
    attention.register_forward_hook(_t5_restore_bias_hook, with_kwargs=True)
