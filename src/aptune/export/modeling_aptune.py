"""Stock ``transformers`` models with per-layer pruned shapes. Every export folder holds a self-contained
copy of this file (imports only torch and transformers), which ``from_pretrained(..., trust_remote_code=True)``
imports without aptune installed: :func:`aptune.export.hf.modeling_source` writes it with the code of
:mod:`aptune.structures.standins` in place of the one aptune import below. Nothing else here may import aptune.

How it works: the export's ``config.json`` keeps the *original* dimensions (so the stock ``__init__``
builds the stock module tree, head sizes and scalings) plus ``aptune_structure``, a record of the pruned
shape of every linear, norm and embedding, and of the attention blocks left with no head. After the stock
constructor runs, :func:`apply_structure` gives each module its pruned shape; ``from_pretrained`` then
loads the pruned weights into them. Nothing here is specific to a module name: the record names the paths.

The stand-ins come from aptune's core (empty attention blocks, T5's position-bias slicing), which uses them
while it prunes a model during training, so the exported model and the in-training model run the same code.
"""

from __future__ import annotations

import torch
from torch import nn

from aptune.structures.standins import (  # noqa: F401  (an export's copy holds this module's code instead)
    EmptyBertSelfAttention,
    EmptyLlamaAttention,
    EmptyT5Attention,
    empty_attention,
    install_t5_bias_slicing,
    set_submodule,
)

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


def _structured_config(base_config_cls):
    """The stock config class with the shape record. It keeps the stock ``model_type`` (``bert``, ``llama``...):
    a ``config.json`` of a type transformers knows loads in ``AutoConfig`` and ``AutoTokenizer`` without asking
    to run this file; ``trust_remote_code=True`` picks these classes through the folder's ``auto_map``."""

    class Config(base_config_cls):
        def __init__(self, aptune_structure: dict | None = None, **kwargs):
            super().__init__(**kwargs)
            self.aptune_structure = aptune_structure or {}

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
    for config_name, model_names in table.values():
        config_cls = _structured_config(getattr(tf, config_name))
        made[config_cls.__name__] = config_cls
        for model_name in model_names:
            model_cls = _structured_model(getattr(tf, model_name), config_cls)
            made[model_cls.__name__] = model_cls
    return made


globals().update(_build_classes())
