"""`aptune export --format onnx`: a pruned encoder export (layers with different head counts and FFN widths, one
attention block and one FFN emptied) becomes an ONNX graph whose ONNX Runtime logits equal the masked model's,
at batch sizes and lengths other than the traced ones; int8 quantisation writes a second graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import random_binary_masks, randomize_adapters

from aptune.cli import main
from aptune.export.onnx import CHECK_SENTENCES, QUANTIZED_NAME, TOLERANCE, inference_session
from aptune.model import APTModel
from aptune.models import load_model, load_tokenizer


def pruned_export(model_name, tmp_path, seed=0, labels=None):
    """A masked APTModel of ``model_name`` with random adapters (and the class names ``labels``), and its
    physically pruned export folder."""
    apt = APTModel(load_model(model_name, head="sequence-classification", num_labels=2), seed=0)
    if labels:
        apt.model.config.id2label = dict(enumerate(labels))
        apt.model.config.label2id = {label: i for i, label in enumerate(labels)}
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
    assert (out / "model.onnx").exists() and (out / QUANTIZED_NAME).exists() and (out / "tokenizer.json").exists()
    for sentences in (CHECK_SENTENCES, CHECK_SENTENCES[:1], ["one more sentence of another length, to be sure"] * 5):
        got = onnx_logits(out / "model.onnx", tokenizer, sentences)
        assert np.abs(got - masked_logits(apt, tokenizer, sentences)).max() <= TOLERANCE
    # int8 is an approximation: same shape, finite, and close to the float graph at this scale
    quantized = onnx_logits(out / QUANTIZED_NAME, tokenizer, CHECK_SENTENCES)
    assert quantized.shape == (len(CHECK_SENTENCES), 2) and np.isfinite(quantized).all()


def test_onnx_export_of_a_run_folder_uses_its_export(tiny_base, tmp_path):
    _, _, export = pruned_export(tiny_base, tmp_path)
    assert main(["export", str(export.parent), "--format", "onnx", "--output", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "model.onnx").exists()


def test_a_folder_that_is_no_export_is_refused_by_name(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx", "--output", str(tmp_path / "onnx")]) == 2
    assert "neither an aptune export" in capsys.readouterr().err


# Run in a fresh interpreter with stdin closed, as a user's script would: transformers asks "Do you wish to run the
# custom code? [y/N]" on stdin when a config.json names code of its folder and trust_remote_code is not given.
PLAIN_LOAD = """
import json, sys
import transformers
folder, sentences = sys.argv[1], json.loads(sys.argv[2])
tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
report = {"ids": tokenizer(sentences).input_ids}
if len(sys.argv) > 3:  # the ONNX folder: its config and graph, with ONNX Runtime alone
    import onnxruntime
    config = transformers.AutoConfig.from_pretrained(folder)
    session = onnxruntime.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
    inputs = tokenizer(sentences, padding=True, return_tensors="np")
    logits = session.run(["logits"], {k: inputs[k] for k in ("input_ids", "attention_mask")})[0]
    report.update(labels=[config.id2label[int(i)] for i in logits.argmax(-1)], model_type=config.model_type,
                  config_class=type(config).__name__, architectures=config.architectures)
print(json.dumps(report))
"""


def load_plainly(folder, sentences, onnx=False) -> dict:
    """What :data:`PLAIN_LOAD` reports of ``folder``; fails on a prompt (its text, or a hang past the timeout)."""
    done = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(folder), json.dumps(sentences)] + ["onnx"] * onnx,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "custom code" not in done.stdout + done.stderr and "trust_remote_code" not in done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_export_and_onnx_folders_load_with_plain_transformers_and_no_prompt(tiny_base, tmp_path):
    """Both folders tokenize with AutoTokenizer as the source tokenizer does; the ONNX folder's config is the stock
    one (labels kept), and ONNX Runtime on it gives the PyTorch export's labels."""
    labels = ["negative", "positive"]
    _, tokenizer, export = pruned_export(tiny_base, tmp_path, labels=labels)
    out = tmp_path / "onnx"
    assert main(["export", str(export), "--format", "onnx", "--output", str(out)]) == 0
    expected_ids = tokenizer(CHECK_SENTENCES).input_ids
    assert load_plainly(export, CHECK_SENTENCES)["ids"] == expected_ids
    report = load_plainly(out, CHECK_SENTENCES, onnx=True)
    assert report["ids"] == expected_ids
    assert report["model_type"] == "bert" and report["config_class"] == "BertConfig"
    assert report["architectures"] == ["BertForSequenceClassification"]
    config = json.loads((out / "config.json").read_text())
    assert not any(key.startswith("aptune") or key == "auto_map" for key in config)
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    model = load_model(export, head="sequence-classification")  # the PyTorch export, as transformers loads it
    with torch.no_grad():
        logits = model(**dict(tokenizer(CHECK_SENTENCES, padding=True, return_tensors="pt"))).logits
    assert report["labels"] == [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert set(report["labels"]) <= set(labels)


@pytest.mark.slow
def test_onnx_graph_of_pruned_minilm_computes_the_masked_model(tmp_path):
    apt, tokenizer, export = pruned_export("minilm", tmp_path)
    out = tmp_path / "onnx"
    assert main(["export", str(export), "--format", "onnx", "--output", str(out)]) == 0
    got = onnx_logits(out / "model.onnx", tokenizer, CHECK_SENTENCES)
    assert np.abs(got - masked_logits(apt, tokenizer, CHECK_SENTENCES)).max() <= TOLERANCE
