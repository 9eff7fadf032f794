"""A run folder belongs to one run: a lock, no silent reuse, checkpoints checked before they are trusted, and a
resumed log without repeated steps (tiny random BERT, real SST-2 rows)."""

from __future__ import annotations

import json

import pytest
from test_train_loop import TINY_RUN

from aptune.config import load_config
from aptune.train import train
from aptune.train.run_folder import RunFolderBusy, claim


def _config(run, base, *extra):
    return load_config(None, [f"output_dir={run}", f"model.name={base}", *TINY_RUN, *extra])


def _steps(run):
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_a_finished_run_is_refused_unless_resumed_or_overwritten(tiny_base, tmp_path):
    run = tmp_path / "run"
    first = train(_config(run, tiny_base))
    with pytest.raises(ValueError, match="holds a finished run.*train.resume=true.*train.overwrite=true"):
        train(_config(run, tiny_base, "train.steps=12", "prune.end_fraction=0.9"))
    assert json.loads((run / "summary.json").read_text())["final"] == first["final"]  # untouched
    second = train(_config(run, tiny_base, "train.overwrite=true", "train.seed=3"))
    assert _steps(run) == list(range(4, 25, 4))  # one run's log, not two appended
    assert json.loads((run / "summary.json").read_text())["final"] == second["final"]


def test_a_locked_folder_fails_at_once_naming_the_holder(tiny_base, tmp_path):
    run = tmp_path / "run"
    holder = claim(run, resume=False, overwrite=False)
    try:
        with pytest.raises(RunFolderBusy, match=r"in use by PID \d+ \(started "):
            train(_config(run, tiny_base))
    finally:
        holder.close()
    train(_config(run, tiny_base))  # released: the folder can be used again


def test_resume_refuses_a_checkpoint_of_another_config_and_names_the_keys(tiny_base, tmp_path):
    run = tmp_path / "run"
    assert train(_config(run, tiny_base, "train.checkpoint_every=8"), stop_after=16) == {"stopped_at": 16}
    with pytest.raises(ValueError, match="another config.*train.lr: 0.001 in the checkpoint, 0.002 now"):
        train(_config(run, tiny_base, "train.resume=true", "train.lr=2e-3"))


def test_a_damaged_checkpoint_is_skipped_for_the_previous_intact_one_and_steps_are_logged_once(tiny_base, tmp_path):
    run = tmp_path / "run"
    reference = train(_config(tmp_path / "whole", tiny_base))
    train(_config(run, tiny_base, "train.checkpoint_every=8"), stop_after=16)
    damaged = run / "checkpoints" / "step-0000016" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated, as by a full disk or a kill mid-copy
    with pytest.warns(UserWarning, match="step-0000016.*model.safetensors does not match its checksum"):
        resumed = train(_config(run, tiny_base, "train.resume=true"))
    assert resumed["masks"] == reference["masks"] and resumed["ranks"] == reference["ranks"]
    assert _steps(run) == list(range(4, 25, 4))  # steps 9-16 were logged before the stop and again after: once


def test_resume_of_a_run_that_left_no_checkpoint_is_refused(tiny_base, tmp_path):
    run = tmp_path / "run"
    train(_config(run, tiny_base, "train.checkpoint_every=8"), stop_after=8)
    for folder in (run / "checkpoints").iterdir():
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    with pytest.raises(ValueError, match="holds no intact checkpoint.*train.overwrite=true"):
        train(_config(run, tiny_base, "train.resume=true"))
