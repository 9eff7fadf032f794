"""Write an exported model folder.

The folder holds ``model.safetensors``, ``config.json`` (original dimensions + ``aptune_structure`` +
``auto_map``; the stock ``model_type``, so that ``AutoConfig`` and ``AutoTokenizer`` load the folder without
asking to run its code), ``modeling_aptune.py`` (this package's file made self-contained by
:func:`modeling_source`), the tokenizer and ``aptune_structure.json`` (kept heads/neurons/dimensions by original
index, adapter ranks, parameter count).

Reload with plain transformers, no aptune needed::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aptune.export import modeling_aptune
from aptune.export.card import write_model_card
from aptune.structures import standins

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
        # the Aptune config classes keep the stock model_type (see modeling_aptune._structured_config)
        if name.startswith("Aptune") and name.endswith("Config") and getattr(cls, "model_type", None) == base_model_type
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


def save_export(model: nn.Module, directory: str | Path, tokenizer=None, card: dict | None = None) -> Path:
    """Save a merged model produced by ``APTModel.merged_model()``, with a ``README.md`` model card made of what
    the folder records and ``card`` (base model, task, metrics, density, command... see :mod:`aptune.export.card`)."""
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
        model_type=base_type,  # stock: AutoConfig and AutoTokenizer load the folder without asking to run code
        aptune_base_model_type=base_type,
        architectures=[f"Aptune{architecture}"],
        auto_map=_auto_map(base_type, architecture),
        aptune_structure=shape_record,
    )
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (directory / "modeling_aptune.py").write_text(modeling_source())
    info = {k: record[k] for k in ("family", "kept", "ranks", "params")}
    info["transformers_version"] = __import__("transformers").__version__
    info["torch_version"] = torch.__version__
    (directory / "aptune_structure.json").write_text(json.dumps(info, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    write_model_card(directory, card or {})  # last: it reads config.json and aptune_structure.json
    return directory


@dataclass(frozen=True)
class ExportKind:
    family: str  # aptune's family: "bert" (encoders), "llama" (decoders), "t5"
    model_type: str  # the stock transformers type: "bert", "roberta", "llama", "qwen2"...
    architecture: str  # the stock class: "BertForSequenceClassification", "LlamaForCausalLM"...


def export_kind(directory: str | Path) -> ExportKind:
    """What an export folder holds, read from its ``aptune_structure.json`` and ``config.json`` without loading
    the model: so that a command can say which export it takes before it spends time loading the wrong one."""
    directory = Path(directory)
    family = json.loads((directory / "aptune_structure.json").read_text()).get("family", "")
    config = json.loads((directory / "config.json").read_text())
    architecture = (config.get("architectures") or [""])[0].removeprefix("Aptune")
    return ExportKind(family, base_model_type(config), architecture)


def base_model_type(config: dict) -> str:
    """The stock ``model_type`` of an export's ``config.json`` (read as a dict)."""
    # aptune 1.0 wrote "aptune_bert" as model_type; aptune_base_model_type has said "bert" throughout
    return config.get("aptune_base_model_type") or config.get("model_type", "").removeprefix("aptune_")


def modeling_source() -> str:
    """The text of ``modeling_aptune.py`` as an export folder holds it: self-contained, with the code of
    :mod:`aptune.structures.standins` in place of the package file's import of it (aptune is not installed
    where exports are loaded, and transformers refuses a remote-code file whose imports it cannot find)."""
    modeling = Path(modeling_aptune.__file__).read_text()
    start, end = _import_lines(modeling, standins.__name__)
    lines = modeling.splitlines(keepends=True)
    code = _code_after_header(Path(standins.__file__).read_text())
    inlined = f"# ---- inlined from {standins.__name__}\n{code}\n\n# ---- end of {standins.__name__}\n"
    return "".join(lines[:start]) + inlined + "".join(lines[end:])


def _import_lines(source: str, module: str) -> tuple[int, int]:
    """0-based [start, end) line range of the module-level ``from <module> import ...`` in ``source``."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module == module:
            return node.lineno - 1, node.end_lineno
    raise ValueError(f"modeling_aptune.py must import {module} at module level (its code is inlined there)")


def _code_after_header(source: str) -> str:
    """``source`` after its module docstring and ``from __future__`` imports: a future import is only legal
    at the top of a file (Python itself keeps them there in ``source``), and the host file has its own."""
    body = ast.parse(source).body
    header = 1 if body and _is_docstring(body[0]) else 0
    while header < len(body) and isinstance(body[header], ast.ImportFrom) and body[header].module == "__future__":
        header += 1
    first_line = body[header - 1].end_lineno if header else 0
    return "".join(source.splitlines(keepends=True)[first_line:])


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
