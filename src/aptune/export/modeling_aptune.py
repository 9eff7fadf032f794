"""Stock ``transformers`` models with per-layer pruned shapes. Self-contained: imports only torch and
transformers, because aptune copies this file into every export folder, where ``from_pretrained(...,
trust_remote_code=True)`` imports it without aptune installed.

How it works: the export's ``config.json`` keeps the *original* dimensions (so the stock ``__init__``
builds the stock module tree, head sizes and scalings) plus ``aptune_structure``, a record of the pruned
shape of every linear, norm and embedding, and of the attention blocks left with no head. After the stock
constructor runs, :func:`apply_structure` gives each module its pruned shape; ``from_pretrained`` then
loads the pruned weights into them. Nothing here is specific to a module name: the record names the paths.

The same helpers serve aptune itself while it prunes a model during training (empty attention blocks,
T5's position-bias slicing), so the exported model and the in-training model run the same code.
"""

from __future__ import annotations

import torch
from torch import nn

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


# --------------------------------------------------------------------------------- shape record


def _local_path(model: nn.Module, path: str) -> str | None:
    """``path`` as it exists in ``model``: a record made on a model with a task head
    (``bert.encoder...``) also applies to the bare base model (``encoder...``). None if absent."""
    candidates = [path]
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and path.startswith(prefix + "."):
        candidates.append(path[len(prefix) + 1:])
    for candidate in candidates:
        try:
            model.get_submodule(candidate)
            return candidate
        except AttributeError:
            continue
    return None


def _find(model: nn.Module, path: str) -> nn.Module | None:
    local = _local_path(model, path)
    return None if local is None else model.get_submodule(local)


def _empty_param(like: torch.Tensor, *shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=like.dtype, device=like.device), requires_grad=like.requires_grad)


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at the dotted ``path`` with ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def apply_structure(model: nn.Module, record: dict) -> None:
    """Give every module named in ``record`` its pruned shape (values are loaded afterwards)."""
    if not record:
        return
    for path, (out_features, in_features) in record.get("linears", {}).items():
        linear = _find(model, path)
        if linear is None:
            continue
        linear.weight = _empty_param(linear.weight, out_features, in_features)
        if getattr(linear, "bias", None) is not None:
            linear.bias = _empty_param(linear.bias, out_features)
        linear.in_features, linear.out_features = in_features, out_features
    for path, size in record.get("norms", {}).items():
        norm = _find(model, path)
        if norm is None:
            continue
        norm.weight = _empty_param(norm.weight, size)
        if getattr(norm, "bias", None) is not None:
            norm.bias = _empty_param(norm.bias, size)
        if hasattr(norm, "normalized_shape"):
            norm.normalized_shape = (size,)
    for path, size in record.get("embeddings", {}).items():
        embedding = _find(model, path)
        if embedding is None:
            continue
        embedding.weight = _empty_param(embedding.weight, embedding.weight.shape[0], size)
        embedding.embedding_dim = size
    for path, kept in record.get("t5_kept_heads", {}).items():
        attention = _find(model, path)
        if attention is not None:
            install_t5_bias_slicing(attention, list(kept))
    for path, kind in record.get("empty_attention", {}).items():
        target = _local_path(model, path)
        if target is not None:
            set_submodule(model, target, empty_attention(kind, model.get_submodule(target)))
    if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "get_output_embeddings"):
        output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
        if output is not None and inputs is not None:
            output.weight = inputs.weight


# -------------------------------------------------------------------- configs and model classes


def _structured_config(base_config_cls, model_type: str):
    class Config(base_config_cls):
        def __init__(self, aptune_structure: dict | None = None, **kwargs):
            super().__init__(**kwargs)
            self.aptune_structure = aptune_structure or {}

    Config.model_type = model_type
    Config.__name__ = Config.__qualname__ = f"Aptune{base_config_cls.__name__}"
    return Config


def _structured_model(base_model_cls, config_cls):
    class Model(base_model_cls):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            apply_structure(self, getattr(config, "aptune_structure", {}))

    Model.config_class = config_cls
    Model.__name__ = Model.__qualname__ = f"Aptune{base_model_cls.__name__}"
    return Model


def _build_classes():
    """Aptune{Config,Model} classes for every supported base model type, as module attributes."""
    import transformers as tf

    table = {
        "bert": ("BertConfig", ["BertModel", "BertForSequenceClassification", "BertForTokenClassification",
                                "BertForQuestionAnswering", "BertForMaskedLM"]),
        "roberta": ("RobertaConfig", ["RobertaModel", "RobertaForSequenceClassification",
                                      "RobertaForTokenClassification", "RobertaForQuestionAnswering"]),
        "llama": ("LlamaConfig", ["LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification"]),
        "mistral": ("MistralConfig", ["MistralModel", "MistralForCausalLM", "MistralForSequenceClassification"]),
        "qwen2": ("Qwen2Config", ["Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"]),
        "t5": ("T5Config", ["T5Model", "T5ForConditionalGeneration", "T5EncoderModel"]),
    }
    made = {}
    for model_type, (config_name, model_names) in table.items():
        config_cls = _structured_config(getattr(tf, config_name), f"aptune_{model_type}")
        made[config_cls.__name__] = config_cls
        for model_name in model_names:
            model_cls = _structured_model(getattr(tf, model_name), config_cls)
            made[model_cls.__name__] = model_cls
    return made


globals().update(_build_classes())
