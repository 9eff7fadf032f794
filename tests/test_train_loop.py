"""The training loop end to end on a tiny random BERT with MiniLM's tokenizer and real SST-2 rows."""

from __future__ import annotations

import json

import torch
from helpers import reload_in_new_process
from safetensors.torch import load_file

from aptune.config import load_config
from aptune.models import load_tokenizer
from aptune.train import train

TINY_RUN = ["data.task=sst2", "data.max_length=32", "data.max_train_samples=256", "data.max_eval_samples=64",
            "train.steps=24", "train.batch_size=8", "train.eval_every=12", "train.log_every=4", "prune.density=0.5",
            "prune.start_step=4", "prune.num_steps=3", "prune.end_fraction=0.75", "prune.warmup_fraction=0",
            "prune.mask_lr=0.5", "train.lr=1e-3", "train.threads=1"]


def test_tiny_apt_run_reaches_target_density_and_exports(tiny_base, tmp_path):
    run = tmp_path / "run"
    summary = train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN,
                                       "distill.enabled=true"]))
    # within the budget, and close to it (a tiny model has coarse blocks: one head is ~7% of it)
    assert 0.4 < summary["density"] <= 0.5
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    prunes = [r for r in records if r.get("event") == "prune"]
    assert len(prunes) == 3 and prunes[-1]["density"] <= 0.5
    assert max(max(p["ranks"].values()) for p in prunes) > 8  # adapters grew from the initial rank 8
    assert any("distill" in r for r in records)  # distillation ran after the first pruning step
    assert len(summary["provenance"]["aptune_git_sha"]) == 40  # the run names the commit it ran at
    assert (run / "config.yaml").exists() and (run / "schedule.json").exists()
    tokenizer = load_tokenizer("minilm")
    inputs = dict(tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt"))
    reloaded = reload_in_new_process(run / "export", "AutoModelForSequenceClassification", inputs, tmp_path)
    assert reloaded["result"].shape == (2, 2)



def test_resumed_run_ends_like_an_uninterrupted_one(tiny_base, tmp_path):
    """Stopped mid-pruning (after the first of three pruning steps) and resumed from its checkpoint, a run
    ends with the same masks, ranks and weights as the same run without the stop."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    reference = train(load_config(None, [f"output_dir={whole}", f"model.name={tiny_base}", *TINY_RUN]))
    first = [f"output_dir={broken}", f"model.name={tiny_base}", *TINY_RUN]
    assert train(load_config(None, first), stop_after=13) == {"stopped_at": 13}
    assert (broken / "checkpoints" / "step-0000013" / "model.safetensors").exists()
    resumed = train(load_config(None, first + ["train.resume=true"]))
    assert resumed["masks"] == reference["masks"]
    assert resumed["ranks"] == reference["ranks"]
    a = load_file(str(whole / "export" / "model.safetensors"))
    b = load_file(str(broken / "export" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_process_run_through_accelerate_launch_agrees_on_masks(tiny_base, tmp_path):
    """`accelerate launch` with two CPU processes (gloo): each trains on its data shard, gradients and
    salience are averaged, and both processes end with identical masks (and a real cut happened)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "aptune", "train", "--no-latency", f"output_dir={run}", f"model.name={tiny_base}",
               *TINY_RUN]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = [json.loads((run / f"masks.rank{i}.json").read_text()) for i in (0, 1)]
    assert masks[0] == masks[1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["density"] <= 0.5
    kept = sum(map(len, masks[0]["heads"].values())) + sum(map(len, masks[0]["ffn"].values())) + len(masks[0]["hidden"])
    assert kept < 2 * 4 + 2 * 64 + 32  # a real cut happened (2 layers of 4 heads and 64 neurons, hidden 32)
