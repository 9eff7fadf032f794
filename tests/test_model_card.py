"""The export's README.md model card: front matter, summary, per-layer structure, scores, command, loading."""

from __future__ import annotations

import json
import re

import transformers
import yaml
from conftest import random_binary_masks, tiny_bert, tiny_llama

from aptune.model import APTModel

CARD = {"base_model": "prajjwal1/bert-tiny", "task": "sst2", "primary_metric": "accuracy",
        "metrics": {"accuracy": 0.87654, "f1": 0.8, "n": 872}, "params": None,  # unknown: left out
        "command": "aptune train --config configs/minilm/sst2.yaml prune.density=0.4",
        "config": {"model": {"name": "prajjwal1/bert-tiny"}, "prune": {"density": 0.4}}}


def _front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "the card starts with a YAML front matter block"
    return yaml.safe_load(match.group(1))


def _layer_rows(text: str) -> dict[str, list[str]]:
    """``{layer: [cells...]}`` of the per-layer table."""
    table = text.split("## Kept structure per layer", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| layer.")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_the_export_card_describes_the_pruned_model(tmp_path):
    apt = APTModel(tiny_bert(num_labels=2))
    random_binary_masks(apt, seed=3)
    original = apt.original_params
    folder = apt.export(tmp_path / "export", card={**CARD, "original_params": original})
    text = (folder / "README.md").read_text()
    structure = json.loads((folder / "aptune_structure.json").read_text())

    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and meta["base_model"] == "prajjwal1/bert-tiny"
    assert {"aptune", "pruned", "bert", "sst2"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-classification"
    assert "None" not in text  # unknown values are left out, never written as None

    params = structure["params"]
    assert f"| density | {params / original:.4f} " in text
    assert f"| prunable parameters kept | {params:,} of {original:,} |" in text
    assert f"| hidden size kept | {len(structure['kept']['hidden'])} of 32 |" in text

    rows = _layer_rows(text)
    assert list(rows) == ["layer.0", "layer.1", "layer.2"]
    for index, (heads, neurons) in rows.items():
        assert heads == f"{len(structure['kept']['heads'][f'{index}.attention'])} of 4"
        assert neurons == f"{len(structure['kept']['ffn'][f'{index}.ffn'])} of 48"
    assert rows["layer.2"] == ["0 of 4", "0 of 48"]  # random_binary_masks empties the last layer

    assert "| accuracy (primary) | 0.8765 |" in text and "| f1 | 0.8000 |" in text
    assert "```bash\naptune train --config configs/minilm/sst2.yaml prune.density=0.4\n```" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("export", trust_remote_code=True)' in text
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)  # the card does not disturb it
    assert config.num_hidden_layers == 3


def test_a_card_without_info_keeps_only_what_the_folder_knows(tmp_path):
    apt = APTModel(tiny_llama())
    random_binary_masks(apt, seed=1, empty_site=False)
    folder = apt.export(tmp_path / "llm")
    text = (folder / "README.md").read_text()
    meta = _front_matter(text)
    assert "base_model" not in meta and meta["pipeline_tag"] == "text-generation"
    assert "None" not in text and "## Dev results" not in text and "## Training" not in text
    structure = json.loads((folder / "aptune_structure.json").read_text())
    assert "attention KV groups kept" in text  # LLaMA prunes whole KV groups: 2 of them in the tiny model
    for index, (groups, _) in _layer_rows(text).items():
        assert groups == f"{len(structure['kept']['heads'][f'{index}.attention'])} of 2"
    assert f"| prunable parameters kept | {structure['params']:,} |" in text
    assert 'AutoModelForCausalLM.from_pretrained("llm", trust_remote_code=True)' in text
