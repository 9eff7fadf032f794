"""The checks before the first step. The sequence length against the model's positions; the memory: the planner's
peak against the free memory, refused at once (nothing written) with both numbers and settings that would fit;
train.skip_memory_check starts anyway. The plans are of real model configs (MiniLM, LLaMA-2-7B's config.json) on the
meta device; no weights are read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_train_loop import TINY_RUN

import aptune.train.preflight as memory_check
from aptune.bench.planner import plan_run
from aptune.cli import main
from aptune.config import load_config, override_config
from aptune.models import max_positions
from aptune.train import train

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30
CPU = torch.device("cpu")


def _peak(config) -> int:
    return plan_run(config, "float32", "cpu")["peak"].total


def test_a_run_that_cannot_fit_is_refused_with_both_numbers_and_what_would_fit(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    config = load_config("minilm/sst2", [f"output_dir={run}"])
    available = _peak(config) - 1  # one byte short
    monkeypatch.setattr(memory_check, "_available_ram", lambda: available)
    assert main(["train", "--config", "minilm/sst2", f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not run.exists()  # refused before anything was written
    assert f"needs {_peak(config) / GIB:.2f} GiB at its peak" in err and f"{available / GIB:.2f} GiB of RAM" in err
    offered = re.search(r"settings that fit: (.*); or set train.skip_memory_check=true", err)[1].split("; ")
    assert offered and any(line.startswith("train.batch_size=16 ") for line in offered)
    for line in offered:  # each offered setting passes the same check
        changes = dict(word.split("=") for word in re.sub(r" \(.*", "", line).split(", "))
        fixed = override_config(load_config("minilm/sst2", [f"output_dir={run}"]),
                                {k.split(".")[0]: {k.split(".")[1]: _value(v)} for k, v in changes.items()})
        assert memory_check.check_memory(fixed, CPU).fits


def _value(word: str):
    return {"true": True, "false": False}.get(word, int(word) if word.isdigit() else word)


def test_a_7b_model_with_a_huge_batch_is_refused_on_any_machine(tmp_path, capsys):
    llama = ROOT / "configs" / "models" / "llama-2-7b.json"
    assert main(["train", f"model.name={llama}", "model.head=causal-lm", "data.task=alpaca", "data.max_length=4096",
                 "train.batch_size=512", f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    needed = float(re.search(r"needs ([\d.]+) GiB", err)[1])
    assert needed > 10_000 and "the run cannot fit" in err  # over 10 TiB: no machine has that free


def test_the_check_can_be_skipped(tiny_base, tmp_path, monkeypatch):
    monkeypatch.setattr(memory_check, "_available_ram", lambda: 1)
    base = [f"model.name={tiny_base}", *TINY_RUN]
    with pytest.raises(ValueError, match="the run cannot fit"):
        train(load_config(None, [f"output_dir={tmp_path / 'refused'}", *base]))
    summary = train(load_config(None, [f"output_dir={tmp_path / 'run'}", *base, "train.skip_memory_check=true"]))
    assert summary["density"] <= 0.5


def test_a_run_that_fits_prints_the_check(tiny_base, tmp_path, capsys):
    train(load_config(None, [f"output_dir={tmp_path / 'run'}", f"model.name={tiny_base}", *TINY_RUN]))
    assert re.search(r"\[aptune\] memory check: the run needs [\d.]+ GiB at its peak \(\w+\), [\d.]+ GiB of RAM is "
                     r"available", capsys.readouterr().out)


def test_a_sequence_longer_than_the_models_positions_is_refused_before_the_run(tiny_base, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError) as caught:
        train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, "data.max_length=100000"]))
    assert str(caught.value) == ("data.max_length=100000 is longer than the 64 positions of the model (bert); set "
                                 "data.max_length to at most 64")
    assert not run.exists()


def test_positions_count_roberta_s_offset_and_t5_has_no_limit():
    import transformers as tf

    assert max_positions(tf.RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert max_positions(tf.BertConfig(max_position_embeddings=512)) == 512
    assert max_positions(tf.T5Config()) is None
