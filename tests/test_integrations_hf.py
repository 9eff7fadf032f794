"""APT inside `transformers.Trainer` takes the same decisions as `aptune train` on the same batches and seed,
and the plain-PyTorch example in examples/ runs end to end."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import reload_in_new_process

from aptune import APT, APTModel
from aptune.config import load_config
from aptune.data import make_dataloader, seed_everything
from aptune.integrations import APTTrainer
from aptune.models import load_tokenizer
from aptune.train import train
from aptune.train.tasks import load_train_task

ROOT = Path(__file__).resolve().parents[1]
# distillation on, three pruning steps, salience-driven rank growth; one evaluation at the end (the Trainer run
# has none, and a dev score refreshes the teacher); no warm-up, so both LR schedules are the same linear decay
RUN = ["data.task=sst2", "data.max_length=32", "data.max_train_samples=256", "data.max_eval_samples=64",
       "train.steps=24", "train.batch_size=8", "train.eval_every=1000", "train.log_every=4", "train.warmup_ratio=0",
       "prune.density=0.5", "prune.start_step=4", "prune.num_steps=3", "prune.end_fraction=0.75",
       "prune.warmup_fraction=0", "prune.mask_lr=0.5", "train.lr=1e-3", "train.threads=1",
       "distill.enabled=true"]  # the paper's method: the distillation path runs inside the Trainer too


@pytest.fixture(scope="module")
def dropout_free_base(tmp_path_factory):
    """A tiny random BERT without dropout (the two loops draw from torch's global RNG differently)."""
    import transformers as tf

    tokenizer = load_tokenizer("minilm")
    config = tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("tiny") / "tiny-bert-no-dropout"
    tf.BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


class RecipeBatches(torch.utils.data.IterableDataset):
    """The batches `aptune train` draws, in its order, already collated (the Trainer then uses batch size 1)."""

    def __init__(self, loader, steps):
        self.loader, self.steps = loader, steps

    def __iter__(self):
        def endless():
            for epoch in itertools.count():
                self.loader.batch_sampler.set_epoch(epoch)
                yield from self.loader

        return itertools.islice(endless(), self.steps)


def _trainer_run(config, tmp_path):
    from transformers import TrainingArguments

    t = config.train
    seed_everything(t.seed)
    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    loader = make_dataloader(task.train, t.batch_size, tokenizer.pad_token_id, shuffle=True, seed=t.seed,
                             group_by_length=True, drop_last=True)
    model = APTModel.from_pretrained(config.model.name, num_labels=task.num_labels, seed=t.seed)
    model.train()
    apt = APT(model, config.method, total_steps=t.steps, seed=t.seed)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=t.steps, per_device_train_batch_size=1,
                             learning_rate=t.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                             max_grad_norm=t.grad_clip, optim="adamw_torch", save_strategy="no", eval_strategy="no",
                             logging_strategy="no", report_to=[], seed=t.seed, use_cpu=True, disable_tqdm=True)
    trainer = APTTrainer(apt=apt, args=args, train_dataset=RecipeBatches(loader, t.steps),
                         data_collator=lambda items: items[0])
    trainer.train()
    return apt, trainer, tokenizer


def test_trainer_and_recipe_keep_the_same_blocks_and_grow_the_same_ranks(dropout_free_base, tmp_path):
    config = load_config(None, [f"output_dir={tmp_path / 'recipe'}", f"model.name={dropout_free_base}", *RUN])
    summary = train(config)
    apt, trainer, tokenizer = _trainer_run(config, tmp_path)
    assert [e.step for e in trainer.apt_callback.events] == apt.schedule.steps
    assert apt.model.state.keep_masks() == summary["masks"]
    assert apt.model.ranks() == summary["ranks"]
    assert max(summary["ranks"].values()) > 8 and summary["density"] <= 0.5  # ranks grew, blocks were cut
    assert apt.teacher_ready  # the distillation path ran inside the Trainer too
    # the Trainer's run ends with the same kind of artefact: a merged, physically smaller export
    export = apt.model.export(tmp_path / "hf-export", tokenizer=tokenizer)
    inputs = dict(tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected = apt.model.merged_model()(**inputs).logits
    reloaded = reload_in_new_process(export, "AutoModelForSequenceClassification", inputs, tmp_path)
    torch.testing.assert_close(reloaded["result"], expected, atol=1e-5, rtol=1e-5)


def test_the_custom_loop_example_prunes_trains_and_exports(tiny_base, tmp_path):
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_loop.py"), "--model", str(tiny_base),
                           "--steps", "30", "--train-rows", "512", "--output", str(out)],
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                          "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("pruning step") == 4 and "dev accuracy" in proc.stdout
    assert (out / "model.safetensors").exists() and (out / "aptune_structure.json").exists()
