"""The lm-eval bridge offline: aptune's multiple-choice items written as a local lm-eval task, scored by
lm-evaluation-harness itself, give the same acc and acc_norm as aptune's scorer, item by item."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_llama_dir

from aptune.data import MCItem
from aptune.eval.lm_eval_bridge import run_lm_eval_on_items, write_local_task
from aptune.eval.mc import evaluate_multiple_choice
from aptune.models import load_model

ITEMS = [
    MCItem("Question: What do plants need to make food?\nAnswer:", ("sunlight", "sand", "a magnet"), 0, id="q1"),
    MCItem("Question: Which is a mammal?\nAnswer:", ("a trout", "a whale", "a frog", "a crow"), 1, id="q2"),
    MCItem("Question: Water boils at sea level at\nAnswer:", ("50 degrees", "100 degrees Celsius"), 1, id="q3"),
]


def test_local_task_file_holds_the_prompts_as_aptune_builds_them(tmp_path):
    folder = write_local_task(ITEMS, tmp_path, "three_items")
    records = [json.loads(line) for line in (folder / "three_items.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == [item.context for item in ITEMS]
    assert [r["choices"] for r in records] == [list(item.choices) for item in ITEMS]
    task = json.loads((folder / "three_items.yaml").read_text())
    assert task["output_type"] == "multiple_choice" and task["target_delimiter"] == " "


def test_items_with_two_delimiters_are_refused(tmp_path):
    mixed = [ITEMS[0], MCItem("Q:", ("a", "b"), 0, target_delimiter="\n")]
    with pytest.raises(ValueError, match="one target delimiter"):
        write_local_task(mixed, tmp_path, "mixed")


def test_lm_eval_scores_the_items_as_aptune_does(tmp_path):
    folder, tokenizer = tiny_llama_dir(tmp_path)
    model = load_model(folder, head="causal-lm").eval()
    ours = evaluate_multiple_choice(model, tokenizer, ITEMS, progress=False, return_details=True)
    theirs = run_lm_eval_on_items(model, tokenizer, ITEMS, "three_items", tmp_path / "tasks")
    assert theirs["n"] == len(ITEMS)
    for item, mine, judged in zip(ITEMS, ours["details"], theirs["details"]):
        assert judged["id"] == item.id
        assert judged["acc"] == float(mine["prediction"] == item.answer), item.id
        assert judged["acc_norm"] == float(mine["prediction_norm"] == item.answer), item.id
        assert judged["loglikelihoods"] == pytest.approx(mine["loglikelihoods"], abs=1e-4), item.id
    assert theirs["acc"] == pytest.approx(ours["acc"]) and theirs["acc_norm"] == pytest.approx(ours["acc_norm"])
