"""`aptune export --format onnx`: a pruned encoder export (layers with different head counts and FFN widths, one
attention block and one FFN emptied) becomes an ONNX graph whose ONNX Runtime logits equal the masked model's,
at batch sizes and lengths other than the traced ones; int8 quantisation writes a second graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_binary_masks, randomize_adapters

from aptune.cli import main
from aptune.export.onnx import CHECK_SENTENCES, TOLERANCE, inference_session
from aptune.model import APTModel
from aptune.models import load_model, load_tokenizer


def pruned_export(model_name, tmp_path, seed=0):
    """A masked APTModel of ``model_name`` with random adapters, and its physically pruned export folder."""
    apt = APTModel(load_model(model_name, head="sequence-classification", num_labels=2), seed=0)
    randomize_adapters(apt, scale=0.02)
    random_binary_masks(apt, seed=seed, keep=0.6, keep_hidden=0.8, empty_site=True)
    apt.eval()
    tokenizer = load_tokenizer(model_name)
    export = apt.export(tmp_path / "export", tokenizer=tokenizer)
    return apt, tokenizer, export


def onnx_logits(path, tokenizer, sentences):
    inputs = tokenizer(sentences, padding=True, return_tensors="np")
    return inference_session(path).run(["logits"], {k: inputs[k] for k in ("input_ids", "attention_mask")})[0]


def masked_logits(apt, tokenizer, sentences):
    with torch.no_grad():
        return apt(**dict(tokenizer(sentences, padding=True, return_tensors="pt"))).logits.numpy()


def test_onnx_graph_of_a_pruned_tiny_encoder_computes_the_masked_model(tiny_base, tmp_path, capsys):
    apt, tokenizer, export = pruned_export(tiny_base, tmp_path)
    out = tmp_path / "onnx"
    assert main(["export", str(export), "--format", "onnx", "--output", str(out), "--quantize", "int8"]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    assert (out / "model.onnx").exists() and (out / "model.int8.onnx").exists() and (out / "tokenizer.json").exists()
    for sentences in (CHECK_SENTENCES, CHECK_SENTENCES[:1], ["one more sentence of another length, to be sure"] * 5):
        got = onnx_logits(out / "model.onnx", tokenizer, sentences)
        assert np.abs(got - masked_logits(apt, tokenizer, sentences)).max() <= TOLERANCE
    # int8 is an approximation: same shape, finite, and close to the float graph at this scale
    quantized = onnx_logits(out / "model.int8.onnx", tokenizer, CHECK_SENTENCES)
    assert quantized.shape == (len(CHECK_SENTENCES), 2) and np.isfinite(quantized).all()


def test_onnx_export_of_a_run_folder_uses_its_export(tiny_base, tmp_path):
    _, _, export = pruned_export(tiny_base, tmp_path)
    assert main(["export", str(export.parent), "--format", "onnx", "--output", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "model.onnx").exists()


def test_a_folder_that_is_no_export_is_refused_by_name(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx", "--output", str(tmp_path / "onnx")]) == 2
    assert "neither an aptune export" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_graph_of_pruned_minilm_computes_the_masked_model(tmp_path):
    apt, tokenizer, export = pruned_export("minilm", tmp_path)
    out = tmp_path / "onnx"
    assert main(["export", str(export), "--format", "onnx", "--output", str(out)]) == 0
    got = onnx_logits(out / "model.onnx", tokenizer, CHECK_SENTENCES)
    assert np.abs(got - masked_logits(apt, tokenizer, CHECK_SENTENCES)).max() <= TOLERANCE
