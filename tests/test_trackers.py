"""train.report_to: TensorBoard, MLflow and Trackio get the numbers of metrics.jsonl, read back with each tool's
own reader, and the Trainer integration hands aptune's pruning events and densities to the Trainer's report_to."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aptune.config import load_config
from aptune.train import train
from aptune.train.trackers import Trackers

# twelve steps, two pruning steps (at 5 and 9), an evaluation at 6 and 12: a few seconds on one thread
TINY_RUN = ["data.task=sst2", "data.max_length=32", "data.max_train_samples=128", "data.max_eval_samples=32",
            "train.steps=12", "train.batch_size=8", "train.eval_every=6", "train.log_every=2", "prune.density=0.5",
            "prune.start_step=2", "prune.num_steps=2", "prune.end_fraction=0.75", "prune.warmup_fraction=0",
            "prune.mask_lr=0.5", "train.lr=1e-3", "train.threads=1"]


def _expected(run: Path) -> dict[tuple[str, int], float]:
    """(tag, step) -> value for the scalars a tracker must hold, spelled out from metrics.jsonl (not through
    aptune's own flattening): losses and densities, the dev metric, and every pruning event with its ranks."""
    expected = {}
    for record in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
        step, event = record["step"], record.get("event")
        if event is None:
            expected |= {(f"train/{k}", step): record[k] for k in ("loss", "density", "kept_density", "lr")}
        elif event == "eval":
            expected[("eval/accuracy", step)] = record["accuracy"]
        elif event == "prune":
            expected |= {(f"prune/{k}", step): record[k] for k in ("density", "params", "k")}
            expected |= {(f"prune/ranks/{name}", step): rank for name, rank in record["ranks"].items()}
            expected |= {(f"prune/removed/{kind}", step): n for kind, n in record["removed"].items()}
    return expected


def _tensorboard_scalars(folder: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}


def _mlflow_scalars(store: Path, tags) -> tuple[dict[tuple[str, int], float], object]:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the store is MLflow's file store (see aptune.train.trackers)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("aptune").experiment_id])
    found = {(tag, m.step): m.value for tag in tags for m in client.get_metric_history(run.info.run_id, tag)}
    return found, run


def _trackio_scalars(folder: Path, run_name: str) -> dict[tuple[str, int], float]:
    """Read with trackio's own storage reader in a fresh interpreter whose TRACKIO_DIR is the run's folder (how a
    user opens it), so the reading does not depend on how aptune pointed trackio there."""
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage; "
            "print(json.dumps(SQLiteStorage.get_logs('aptune', sys.argv[1])))")
    proc = subprocess.run([sys.executable, "-c", code, run_name], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TRACKIO_DIR": str(folder), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(tag, log["step"]): value for log in logs for tag, value in log.items()
            if isinstance(value, (int, float)) and "/" in tag}


def test_three_trackers_hold_the_metrics_files_numbers(tiny_base, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN,
                             "train.report_to=[tensorboard, mlflow, trackio]"]))
    expected = _expected(run)
    assert any(tag.startswith("prune/ranks/") for tag, _ in expected)  # the run pruned and grew ranks
    assert {step for tag, step in expected if tag == "prune/density"} == {5, 9}

    # TensorBoard stores float32
    board = _tensorboard_scalars(run / "tensorboard")
    assert {key: pytest.approx(value, rel=1e-6) for key, value in expected.items()} == \
        {key: board.get(key) for key in expected}

    mlflow, mlflow_run = _mlflow_scalars(run / "mlruns", {tag for tag, _ in expected})
    assert mlflow == expected
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.params["prune.density"] == "0.5"

    trackio = _trackio_scalars(run / "trackio", run.name)
    assert {key: trackio.get(key) for key in expected} == expected


def test_a_resumed_run_continues_the_same_tracker_runs(tiny_base, tmp_path):
    """Stopped after step 6 (which logged a loss and an evaluation) and resumed from its checkpoint there, the run
    is still one run in every tracker, holding the numbers of the continued metrics.jsonl, step 6 included."""
    run = tmp_path / "run"
    args = [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, "train.report_to=[tensorboard, mlflow, trackio]"]
    assert train(load_config(None, args), stop_after=6) == {"stopped_at": 6}
    train(load_config(None, args + ["train.resume=true"]))
    expected = _expected(run)
    assert ("train/loss", 12) in expected and ("eval/accuracy", 6) in expected
    board = _tensorboard_scalars(run / "tensorboard")
    assert {key: pytest.approx(value, rel=1e-6) for key, value in expected.items()} == \
        {key: board.get(key) for key in expected}
    mlflow, _ = _mlflow_scalars(run / "mlruns", {tag for tag, _ in expected})  # unpacking: exactly one run
    assert mlflow == expected
    trackio = _trackio_scalars(run / "trackio", run.name)
    assert {key: trackio.get(key) for key in expected} == expected


def test_trackio_goes_back_home_after_a_run(tiny_base, tmp_path):
    """aptune points trackio's folder globals at the run folder only while the run lasts: a second run in the
    same process writes its own folder, and afterwards trackio's folder is what it was."""
    import trackio.utils

    home = trackio.utils.TRACKIO_DIR
    for name in ("a", "b"):
        train(load_config(None, [f"output_dir={tmp_path / name}", f"model.name={tiny_base}", *TINY_RUN,
                                 "train.steps=6", "prune.enabled=false", "train.report_to=[trackio]"]))
        assert _trackio_scalars(tmp_path / name / "trackio", name)[("train/loss", 6)] > 0
    assert trackio.utils.TRACKIO_DIR == home


def test_an_unknown_tracker_is_refused_when_the_config_is_read():
    with pytest.raises(ValueError) as error:
        load_config(None, ["train.report_to=[tensorboard, wandb]"])
    message = str(error.value)
    assert "train.report_to" in message and "wandb" in message and 'pip install "aptune[track]"' in message


def test_both_command_line_spellings_give_a_list():
    assert load_config(None, ["train.report_to=[tensorboard, mlflow]"]).train.report_to == ["tensorboard", "mlflow"]
    assert load_config(None, ["train.report_to=trackio,mlflow"]).train.report_to == ["trackio", "mlflow"]
    assert load_config(None, []).train.report_to == []


def test_a_tracker_without_its_package_stops_the_run_before_it_writes(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"train.report_to=\['mlflow'\]: mlflow is not installed; "
                                         r'pip install "aptune\[track\]"'):
        train(load_config(None, [f"output_dir={run}", "train.report_to=[mlflow]"]))
    assert not run.exists()
    with pytest.raises(ValueError, match="unknown tracker 'wandb'"):  # Trackers checks names set in Python too
        Trackers(["wandb"])


def test_the_trainer_reports_aptunes_events_to_its_own_tensorboard(tiny_base, tmp_path):
    """APTTrainer with TrainingArguments(report_to=["tensorboard"]): the Trainer's TensorBoard callback writes
    each pruning step's scalars and the densities of every training log, at the Trainer's steps."""
    from transformers import TrainingArguments

    from aptune import APT, APTModel
    from aptune.data import make_dataloader
    from aptune.integrations import APTTrainer
    from aptune.models import load_tokenizer
    from aptune.train.tasks import load_train_task

    config = load_config(None, [f"model.name={tiny_base}", *TINY_RUN])
    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    batches = list(make_dataloader(task.train, 8, tokenizer.pad_token_id, shuffle=True, seed=0, drop_last=True))
    model = APTModel.from_pretrained(config.model.name, num_labels=task.num_labels, seed=0)
    model.train()
    apt = APT(model, config.method, total_steps=12, seed=0)
    out = tmp_path / "hf"
    args = TrainingArguments(output_dir=str(out), max_steps=12, per_device_train_batch_size=1, learning_rate=1e-3,
                             save_strategy="no", eval_strategy="no", logging_steps=3, report_to=["tensorboard"],
                             use_cpu=True, disable_tqdm=True)
    trainer = APTTrainer(apt=apt, args=args, train_dataset=batches, data_collator=lambda items: items[0])
    trainer.train()

    events = trainer.apt_callback.events
    assert [e.step for e in events] == [5, 9] and events[-1].density <= 0.5
    (event_file,) = out.rglob("events.out.tfevents.*")
    board = _tensorboard_scalars(event_file.parent)
    # the Trainer's TensorBoard callback files every non-eval log under train/
    for e in events:
        assert board[("train/prune/density", e.step)] == pytest.approx(e.density, rel=1e-6)
        assert board[("train/prune/tuning_params", e.step)] == e.tuning_params
        assert board[("train/prune/rank_max", e.step)] == max(e.ranks.values())
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == [3, 6, 9, 12]
    assert logged[0]["density"] == 1.0 and logged[-1]["density"] == pytest.approx(events[-1].density)
    for h in logged:
        assert board[("train/density", h["step"])] == pytest.approx(h["density"], rel=1e-6)
        assert board[("train/tuning_params", h["step"])] == h["tuning_params"]
