"""GLUE dev-set evaluation of a classifier, in the library and through ``aptune eval --task``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aptune.cli import main
from aptune.data import load_glue_task
from aptune.eval.classification import evaluate_task, predict_task


pytestmark = pytest.mark.usefixtures("no_env_data")


@pytest.fixture(scope="module")
def tokenizer():
    from aptune.models import load_tokenizer

    return load_tokenizer("minilm")


def _tiny_classifier(tokenizer, num_labels):
    import transformers as tf

    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, num_labels=num_labels)
    return tf.BertForSequenceClassification(config).eval()


def test_predictions_come_back_in_dataset_order(tokenizer):
    model = _tiny_classifier(tokenizer, 2)
    task = load_glue_task("mrpc", tokenizer, max_length=64, max_eval_samples=24, include_train=False)
    logits, labels = predict_task(model, task.eval, tokenizer.pad_token_id, batch_size=5)
    with torch.no_grad():
        one = model(input_ids=torch.tensor([task.eval[7]["input_ids"]]),
                    token_type_ids=torch.tensor([task.eval[7]["token_type_ids"]])).logits[0].numpy()
    assert np.allclose(logits[7], one, atol=1e-5)
    assert labels.tolist() == [example["labels"] for example in task.eval]
    metrics = evaluate_task(model, task, pad_token_id=tokenizer.pad_token_id, batch_size=5)
    assert set(metrics) == {"f1", "accuracy", "n"} and metrics["n"] == 24


def test_head_size_mismatch_is_an_error(tokenizer):
    task = load_glue_task("stsb", tokenizer, max_eval_samples=4, include_train=False)
    with pytest.raises(ValueError, match="needs 1"):
        evaluate_task(_tiny_classifier(tokenizer, 2), task)


def test_cli_eval_on_a_glue_task(tokenizer, tmp_path, capsys):
    folder = tmp_path / "model"
    _tiny_classifier(tokenizer, 2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    output = tmp_path / "rte.json"
    code = main(["eval", "--model", str(folder), "--task", "RTE", "--max-samples", "16", "--output", str(output),
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rte (dev): accuracy=" in printed and "n=16" in printed
    assert "warning" not in printed  # its classifier was saved with it
    result = json.loads(output.read_text())["results"][0]
    assert result["task"] == "rte" and result["n"] == 16 and result["primary_metric"] == "accuracy"


def _save_encoder_without_classifier(tokenizer, folder):
    """A tiny BERT saved as a plain encoder: loading it for sequence classification initialises the head at random."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48)
    tf.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_load_model_names_a_head_it_had_to_initialise(tokenizer, tmp_path):
    from aptune.models import load_model, untrained_head

    encoder = _save_encoder_without_classifier(tokenizer, tmp_path / "encoder")
    assert untrained_head(load_model(encoder, head="sequence-classification", num_labels=2)) == ("classifier",)
    assert untrained_head(load_model(encoder, head="base")) == ()
    trained = tmp_path / "classifier"
    _tiny_classifier(tokenizer, 2).save_pretrained(trained)
    model = load_model(trained, head="sequence-classification")
    assert untrained_head(model) == () and not model.training  # other callers still get the bare model


def test_cli_eval_says_first_that_a_random_head_gives_chance_scores(tokenizer, tmp_path, capsys):
    encoder = _save_encoder_without_classifier(tokenizer, tmp_path / "encoder")
    output = tmp_path / "rte.json"
    assert main(["eval", "--model", str(encoder), "--task", "rte", "--max-samples", "8", "--output", str(output),
                 "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("warning: the task head `classifier` was never trained: it is randomly initialised, so the "
                     "scores are chance-level; evaluate a fine-tuned model or an aptune export")
    assert json.loads(output.read_text())["warnings"] == [first]


def test_cli_eval_refuses_a_data_dir_without_the_task(tokenizer, tmp_path, capsys):
    folder = tmp_path / "model"
    _tiny_classifier(tokenizer, 2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["eval", "--model", str(folder), "--task", "sst2", "--data-dir", str(tmp_path)]) == 2
    assert f"the data folder {tmp_path} (--data-dir / data.data_dir) lacks SST-2/dev.tsv" in capsys.readouterr().err
