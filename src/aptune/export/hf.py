"""Write an exported model folder and register its classes.

The folder holds ``model.safetensors``, ``config.json`` (original dimensions + ``aptune_structure`` +
``auto_map``), ``modeling_aptune.py`` (copied from this package), the tokenizer and
``aptune_structure.json`` (kept heads/neurons/dimensions by original index, adapter ranks, parameter count).

Reload with plain transformers, no aptune needed::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

With aptune imported, the classes are also registered with the Auto classes, so
``trust_remote_code`` is not needed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from aptune.export import modeling_aptune

_AUTO_NAMES = {
    "Model": "AutoModel",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForCausalLM": "AutoModelForCausalLM",
    "ForConditionalGeneration": "AutoModelForSeq2SeqLM",
    "EncoderModel": "AutoModel",
}


def _auto_map(base_model_type: str, architecture: str) -> dict[str, str]:
    config_cls = next(
        name for name, cls in vars(modeling_aptune).items()
        if name.endswith("Config") and getattr(cls, "model_type", None) == f"aptune_{base_model_type}"
    )
    mapping = {"AutoConfig": f"modeling_aptune.{config_cls}"}
    stem = config_cls[len("Aptune"):-len("Config")]  # e.g. "Bert"
    for name in vars(modeling_aptune):
        if not name.startswith(f"Aptune{stem}") or name.endswith("Config"):
            continue
        suffix = name[len(f"Aptune{stem}"):]
        auto = _AUTO_NAMES.get(suffix)
        if auto and (auto not in mapping or name == f"Aptune{architecture}"):
            mapping[auto] = f"modeling_aptune.{name}"
    return mapping


def save_export(model: nn.Module, directory: str | Path, tokenizer=None) -> Path:
    """Save a merged model produced by ``APTModel.merged_model()``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = getattr(model, "_aptune_record", None)
    if record is None:
        raise ValueError("save_export expects APTModel.merged_model()'s output (it carries the structure record)")
    base_type = model.config.model_type
    architecture = type(model).__name__
    if hasattr(model.config, "aptune_base_model_type"):  # tuned again from an aptune export: name the stock class
        base_type = model.config.aptune_base_model_type
        architecture = architecture.removeprefix("Aptune")
    if not hasattr(modeling_aptune, f"Aptune{architecture}"):
        raise ValueError(f"no aptune export class for {architecture}; supported: "
                         + ", ".join(n[6:] for n in vars(modeling_aptune) if n.startswith("Aptune") and not n.endswith("Config")))
    model.save_pretrained(directory, safe_serialization=True)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    shape_record = {k: record[k] for k in ("format", "linears", "norms", "embeddings", "empty_attention", "t5_kept_heads")}
    config.update(
        model_type=f"aptune_{base_type}",
        aptune_base_model_type=base_type,
        architectures=[f"Aptune{architecture}"],
        auto_map=_auto_map(base_type, architecture),
        aptune_structure=shape_record,
    )
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    shutil.copy(Path(modeling_aptune.__file__), directory / "modeling_aptune.py")
    info = {k: record[k] for k in ("family", "kept", "ranks", "params")}
    info["transformers_version"] = __import__("transformers").__version__
    info["torch_version"] = torch.__version__
    (directory / "aptune_structure.json").write_text(json.dumps(info, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def register_auto_classes() -> None:
    """Register the Aptune* classes with transformers' Auto classes (no trust_remote_code needed)."""
    import transformers

    for name, cls in vars(modeling_aptune).items():
        if not name.startswith("Aptune") or not name.endswith("Config"):
            continue
        try:
            transformers.AutoConfig.register(cls.model_type, cls, exist_ok=True)
        except TypeError:  # older transformers without exist_ok
            try:
                transformers.AutoConfig.register(cls.model_type, cls)
            except ValueError:
                pass
        stem = name[len("Aptune"):-len("Config")]
        for model_name, model_cls in vars(modeling_aptune).items():
            if not model_name.startswith(f"Aptune{stem}") or model_name.endswith("Config"):
                continue
            auto = _AUTO_NAMES.get(model_name[len(f"Aptune{stem}"):])
            if auto:
                try:
                    getattr(transformers, auto).register(cls, model_cls, exist_ok=True)
                except (ValueError, TypeError):
                    pass
