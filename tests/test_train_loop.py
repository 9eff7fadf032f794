"""The training loop end to end on a tiny random BERT with MiniLM's tokenizer and real SST-2 rows:
it prunes to the target density on schedule, grows ranks, distils, and exports a model that reloads."""

from __future__ import annotations

import json

import torch
import transformers as tf
from helpers import reload_in_new_process

from aptune.config import load_config
from aptune.models import load_tokenizer
from aptune.train import train


def test_tiny_apt_run_reaches_target_density_and_exports(tmp_path):
    tokenizer = load_tokenizer("minilm")
    config = tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    base = tmp_path / "tiny-bert"
    tf.BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    run = tmp_path / "run"
    cfg = load_config(None, [
        f"output_dir={run}", f"model.name={base}", "data.task=sst2", "data.max_length=32",
        "data.max_train_samples=256", "data.max_eval_samples=64", "train.steps=24", "train.batch_size=8",
        "train.eval_every=12", "train.log_every=4", "prune.density=0.5", "prune.start_step=4", "prune.num_steps=3",
        "prune.end_fraction=0.75", "prune.warmup_fraction=0", "prune.mask_lr=0.5", "train.lr=1e-3",
    ])
    summary = train(cfg)
    # within the budget, and close to it (a tiny model has coarse blocks: one head is ~7% of it)
    assert 0.4 < summary["density"] <= 0.5
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    prunes = [r for r in records if r.get("event") == "prune"]
    assert len(prunes) == 3 and prunes[-1]["density"] <= 0.5
    initial_rank = 8
    assert max(max(p["ranks"].values()) for p in prunes) > initial_rank  # adapters grew
    assert any("distill" in r for r in records)  # distillation ran after the first pruning step
    assert (run / "config.yaml").exists() and (run / "schedule.json").exists()
    inputs = dict(tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt"))
    reloaded = reload_in_new_process(run / "export", "AutoModelForSequenceClassification", inputs, tmp_path)
    assert reloaded["result"].shape == (2, 2)
