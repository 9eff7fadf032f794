"""The export's model card: a ``README.md`` that says what the folder holds and how it was made.

Hugging Face's convention: YAML front matter (``library_name``, ``base_model``, ``tags``, ``pipeline_tag``),
then Markdown. The card reads what the folder records itself (``aptune_structure.json``: kept heads, neurons
and hidden dimensions by original index, adapter ranks, parameter count; ``config.json``: the original sizes,
the architecture and its Auto class) and takes the rest from ``info``, whose keys are all optional:

    base_model, task, metrics (dict), primary_metric, density, original_params, params,
    command (the training command line), config (the resolved config as a dict)

What is not known is left out rather than written as "None"; a card with an empty ``info`` still lists the
structure and how to load the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

# aptune's short model names and the hub models they are copies of (for the card's base_model)
KNOWN_BASE_MODELS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
# architecture suffix -> the hub's pipeline tag
PIPELINE_TAGS = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
    "ForCausalLM": "text-generation",
    "ForConditionalGeneration": "text2text-generation",
    "Model": "feature-extraction",
}
# config.json keys of the original sizes, first present wins (LLaMA prunes whole KV groups)
_HEAD_KEYS = ("num_key_value_heads", "num_attention_heads", "num_heads")
_FFN_KEYS = ("intermediate_size", "d_ff", "ffn_dim")
_HIDDEN_KEYS = ("hidden_size", "d_model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def write_model_card(directory: str | Path, info: dict | None = None) -> Path:
    """Write ``README.md`` into an export folder; returns its path."""
    directory = Path(directory)
    info = {key: value for key, value in (info or {}).items() if value is not None}
    structure = _read_json(directory / "aptune_structure.json")
    config = _read_json(directory / "config.json")
    sections = [
        _front_matter(info, structure, config),
        _title(info),
        _summary(info, structure, config),
        _scores(info),
        _layer_table(structure, config),
        _how_to_load(directory, config),
        _training(info),
    ]
    path = directory / "README.md"
    path.write_text("\n".join(section for section in sections if section))
    return path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def hub_base_model(name: str | None) -> str | None:
    """The hub id of a base model: a known short name's, or the name itself when it looks like one (a local
    folder is not a hub id, and the hub rejects cards that name one)."""
    if not name:
        return None
    if name in KNOWN_BASE_MODELS:
        return KNOWN_BASE_MODELS[name]
    return name if _HUB_ID.match(name) and not Path(name).exists() else None


def _architecture(config: dict) -> str | None:
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else None


def _stock_architecture(config: dict) -> str | None:
    """``BertForSequenceClassification`` for the export's ``AptuneBertForSequenceClassification``."""
    architecture = _architecture(config)
    return architecture.removeprefix("Aptune") if architecture else None


def _pipeline_tag(config: dict) -> str | None:
    architecture = _architecture(config) or ""
    return next((tag for suffix, tag in PIPELINE_TAGS.items() if architecture.endswith(suffix)), None)


def _front_matter(info: dict, structure: dict, config: dict) -> str:
    meta: dict[str, Any] = {"library_name": "transformers"}
    base = hub_base_model(info.get("base_model"))
    if base:
        meta["base_model"] = base
    meta["tags"] = ["aptune", "pruned", "structured-pruning",
                    *[tag for tag in (structure.get("family"), info.get("task")) if tag]]
    tag = _pipeline_tag(config)
    if tag:
        meta["pipeline_tag"] = tag
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n"


def _title(info: dict) -> str:
    base = info.get("base_model")
    name = f"{Path(base).name if Path(base).exists() else base}, pruned with aptune" if base else \
        "A model pruned with aptune"
    return (f"# {name}\n\nA structurally pruned model made with aptune (Adaptive Pruning and Tuning, APT; Zhao, "
            "Hajishirzi, Cao, ICML 2024): attention heads, FFN neurons and hidden dimensions were removed while "
            "low-rank adapters were tuned, and the adapters were then merged into the smaller weights.\n")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _summary(info: dict, structure: dict, config: dict) -> str:
    rows = []
    if "base_model" in info:
        base, hub = info["base_model"], hub_base_model(info["base_model"])
        rows.append(("base model", f"`{base}`" + (f" ({hub})" if hub and hub != base else "")))
    if "task" in info:
        rows.append(("task", f"`{info['task']}`"))
    if _stock_architecture(config):
        rows.append(("architecture", f"`{_stock_architecture(config)}`"))
    # the folder's own count first: it is what the folder holds, whatever the caller believed
    params, original = structure.get("params", info.get("params")), info.get("original_params")
    density = params / original if params is not None and original else info.get("density")
    if density is not None:
        rows.append(("density", f"{density:.4f} ({density:.1%} of the prunable parameters kept)"))
    if params is not None:
        kept = _count(params) + (f" of {_count(original)}" if original else "")
        rows.append(("prunable parameters kept", kept))
    hidden = _kept_of(len(structure["kept"]["hidden"]), _first(config, _HIDDEN_KEYS)) \
        if "hidden" in structure.get("kept", {}) else None
    if hidden:
        rows.append(("hidden size kept", hidden))
    ranks = structure.get("ranks") or {}
    if ranks:
        rows.append(("adapter ranks (merged)", f"{min(ranks.values())} to {max(ranks.values())} over "
                                               f"{len(ranks)} linears"))
    if not rows:
        return ""
    return "## Summary\n\n| | |\n|---|---|\n" + "".join(f"| {key} | {value} |\n" for key, value in rows)


def _scores(info: dict) -> str:
    metrics = {name: value for name, value in (info.get("metrics") or {}).items() if value is not None}
    if not metrics:
        return ""
    primary = info.get("primary_metric")
    order = sorted(metrics, key=lambda name: name != primary)  # the primary metric first
    lines = ["## Dev results\n", "| metric | value |", "|---|---:|"]
    for name in order:
        label = f"{name} (primary)" if name == primary else name
        value = metrics[name]
        lines.append(f"| {label} | {value:.4f} |" if isinstance(value, float) else f"| {label} | {_count(value)} |")
    return "\n".join(lines) + "\n"


def _first(config: dict, keys: tuple[str, ...]) -> int | None:
    return next((config[key] for key in keys if isinstance(config.get(key), int)), None)


def _kept_of(kept: int, original: int | None) -> str:
    return f"{kept} of {original}" if original else str(kept)


def _layer_table(structure: dict, config: dict) -> str:
    """One row per layer: kept heads (KV groups for LLaMA) and FFN neurons, each of the original count."""
    kept = structure.get("kept") or {}
    heads, ffn = kept.get("heads") or {}, kept.get("ffn") or {}
    if not heads and not ffn:
        return ""
    layers = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in [*heads, *ffn]))
    original_heads, original_ffn = _first(config, _HEAD_KEYS), _first(config, _FFN_KEYS)
    head_word = "KV groups" if structure.get("family") == "llama" else "heads"
    lines = ["## Kept structure per layer\n",
             "Indices refer to the original model; `aptune_structure.json` lists every kept head, neuron and "
             "hidden dimension.\n",
             f"| layer | attention {head_word} kept | FFN neurons kept |", "|---|---|---|"]
    for layer in layers:
        sites = [(name.rsplit(".", 1)[1], kept_ids) for name, kept_ids in heads.items()
                 if name.rsplit(".", 1)[0] == layer]
        attention = ", ".join(_kept_of(len(ids), original_heads) if len(sites) == 1 else
                              f"{kind.replace('_attention', '')}: {_kept_of(len(ids), original_heads)}"
                              for kind, ids in sites) or "-"
        neurons = ", ".join(_kept_of(len(ids), original_ffn) for name, ids in ffn.items()
                            if name.rsplit(".", 1)[0] == layer) or "-"
        lines.append(f"| {layer} | {attention} | {neurons} |")
    return "\n".join(lines) + "\n"


def _auto_class(config: dict) -> str:
    """The Auto class whose ``auto_map`` entry builds the export's architecture."""
    architecture = _architecture(config)
    auto_map = config.get("auto_map") or {}
    matches = [auto for auto, target in auto_map.items() if architecture and target.endswith(f".{architecture}")]
    return matches[0] if matches else "AutoModel"


def _how_to_load(directory: Path, config: dict) -> str:
    auto = _auto_class(config)
    return ("## How to load\n\n"
            "With plain transformers (aptune is not needed):\n\n"
            "```python\n"
            f"from transformers import {auto}\n\n"
            f'model = {auto}.from_pretrained("{directory.name}", trust_remote_code=True)\n'
            "```\n\n"
            f"(`{directory.name}` stands for the path of this folder, or its hub id once uploaded.) "
            "`trust_remote_code=True` runs `modeling_aptune.py` from this folder: it subclasses the stock model and "
            "gives each layer its pruned shape (recorded in `config.json` under `aptune_structure`) before the "
            "weights load.\n")


def _training(info: dict) -> str:
    parts = []
    if "command" in info:
        parts.append(f"Command:\n\n```bash\n{info['command']}\n```\n")
    if info.get("config"):
        plain = json.loads(json.dumps(info["config"], default=str))  # paths and the like as text, for safe_dump
        resolved = yaml.safe_dump(plain, sort_keys=False).rstrip()
        parts.append(f"<details>\n<summary>Resolved config</summary>\n\n```yaml\n{resolved}\n```\n\n</details>\n")
    return "## Training\n\n" + "\n".join(parts) if parts else ""
