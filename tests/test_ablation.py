"""The ablation runner and report end to end on a tiny random BERT, plus the report's computed metrics.

The end-to-end test runs a three-run plan (``apt``, ``no_self_distillation`` and a run whose override is
invalid) through ``aptune ablate``, checks the result schema, the failure record and the skip on a re-run,
then builds the report. Each run trains and is timed in its own processes, so the test takes about a minute.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from aptune.ablation.plan import load_plan, nest
from aptune.ablation.report import mask_overlap, time_to_score
from aptune.cli import main
from aptune.config import load_config

# the style of test_train_loop.TINY_RUN, as a plan profile's overrides
TINY = {"data.max_length": 32, "data.max_train_samples": 256, "data.max_eval_samples": 64, "train.steps": 24,
        "train.batch_size": 8, "train.eval_every": 6, "train.log_every": 4, "prune.density": 0.5,
        "prune.start_step": 4, "prune.num_steps": 3, "prune.end_fraction": 0.75, "prune.warmup_fraction": 0,
        "prune.mask_lr": 0.5, "train.lr": 1e-3, "train.threads": 1}


def _write_plan(tmp_path, tiny_base):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_base)}, "data": {"task": "sst2"}}))
    plan = {
        "base": "tiny.yaml",
        "runs": {
            "apt": {"role": "method", "what": "the full method", "patch": {"distill": {"enabled": True}}},
            "no_self_distillation": {"what": "no teacher", "patch": {"distill": {"enabled": False}},
                                     "reports": ["task_performance", "training_convergence", "training_memory"]},
            "broken": {"prune.density": 2.0},  # a bare patch; the value is invalid, so `aptune train` exits 2
        },
        "default_profile": "tiny",
        "profiles": {"tiny": {"tasks": ["sst2"], "seeds": [7], "overrides": TINY,
                              "inference": {"batch_sizes": [2, 4], "seq_len": 16, "warmup": 1, "repeats": 2,
                                            "threads": 1}}},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_plan_runs_records_failure_skips_finished_and_reports(tiny_base, tmp_path, capsys):
    plan, runs = _write_plan(tmp_path, tiny_base), tmp_path / "runs"
    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 1  # one run failed
    first = capsys.readouterr().out
    assert "[1/3] apt sst2 seed 7: running ... ok, acc " in first
    assert "[3/3] broken sst2 seed 7: running ... FAILED in train" in first

    results = {p.stem: json.loads(p.read_text()) for p in (runs / "results").glob("*.json")}
    assert set(results) == {"apt__sst2__seed7", "no_self_distillation__sst2__seed7", "broken__sst2__seed7"}
    apt = results["apt__sst2__seed7"]
    assert set(apt) >= {"run_info", "train_info", "inference_info", "eval_info", "meta_info"}
    info = apt["run_info"]
    assert info["status"] == "ok" and info["error"] is None and info["total_time"] > 0
    assert info["config"]["train"]["seed"] == 7 and info["config"]["prune"]["density"] == 0.5
    assert "aptune train --no-latency" in info["command"] and info["created_at"]
    assert len(info["inference_command"]) == 2  # one fresh process per timed batch size
    train = apt["train_info"]
    assert train["peak_rss_bytes"] > 0 and train["train_time_s"] > 0 and train["time_to_accuracy"] is None
    assert [h["step"] for h in train["curve"]] == [6, 12, 18, 24]
    assert sum(e["event"] == "prune" for e in train["events"]) == 3
    assert train["pruning_accuracy"] is not None and train["density"] <= 0.5
    assert set(train["masks"]) == {"heads", "ffn", "hidden"}
    inference = apt["inference_info"]
    assert set(inference["by_batch"]) == {"2", "4"}
    for timing in inference["by_batch"].values():
        assert timing["median_s"] > 0 and timing["p90_s"] >= timing["median_s"] and timing["throughput"] > 0
        assert timing["peak_memory_bytes"] >= inference["weights_bytes"]
    assert inference["params"] > 0 and inference["disk_bytes"] > inference["weights_bytes"] // 2
    assert apt["eval_info"]["primary_metric"] == "accuracy" and 0 <= apt["eval_info"]["final"]["accuracy"] <= 1
    meta = apt["meta_info"]
    assert meta["aptune_git_sha"] and meta["versions"]["torch"] and meta["threads"] == {"train": 1, "inference": 1}
    assert results["no_self_distillation__sst2__seed7"]["run_info"]["status"] == "ok"
    records = [json.loads(line) for line in
               (runs / "runs" / "no_self_distillation__sst2__seed7" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert not any("distill" in key for r in records for key in r)  # the patch took effect: no distillation loss
    broken = results["broken__sst2__seed7"]["run_info"]
    assert broken["status"] == "failed" and broken["failed_phase"] == "train" and broken["returncode"] == 2
    assert "prune.density must lie in (0, 1]" in broken["error"]

    # a re-run skips what finished (the result files are not rewritten) and retries the failed run
    stamps = {name: (runs / "results" / f"{name}.json").stat().st_mtime_ns for name in results}
    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 1
    second = capsys.readouterr().out
    assert "[1/3] apt sst2 seed 7: skipped (finished earlier: ok, acc " in second
    assert "[2/3] no_self_distillation sst2 seed 7: skipped" in second
    assert "[3/3] broken sst2 seed 7: running ... FAILED" in second
    for name in ("apt__sst2__seed7", "no_self_distillation__sst2__seed7"):
        assert (runs / "results" / f"{name}.json").stat().st_mtime_ns == stamps[name]

    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Protocol" in report and "time-to-accuracy = wall time until the dev metric" in report
    assert "### Ablation: no_self_distillation" in report and "## Failed runs" in report
    assert "against `apt`, `no_self_distillation` (no teacher)" in report  # the generated reading
    for png in ("tradeoff_sst2.png", "convergence_sst2_all.png", "convergence_sst2_no_self_distillation.png",
                "kept_sst2.png", "ranks_sst2.png"):
        assert (out / png).stat().st_size > 1000, png
    assert (out / "runs.csv").read_text().count("\n") == 3  # header + the two finished runs


def test_plan_expansion_orders_layers_and_rejects_unknown_names(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {lr: 1.0e-4}\n")
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "tasks": ["sst2"], "seeds": [1],
        "runs": {"a": {"train.lr": 5e-5}, "b": {"patch": {"prune": {"enabled": False}}, "reports": ["training_time"]}},
        "profiles": {"p": {"tasks": ["sst2", "mrpc"], "seeds": [1, 2], "overrides": {"train.lr": 1e-3, "train.steps": 9},
                           "task_overrides": {"mrpc": {"train.steps": 5}}}},
    }))
    plan = load_plan(tmp_path / "plan.yaml", "p")
    specs = plan.expand()
    assert [s.run_id for s in specs[:4]] == ["a__sst2__seed1", "b__sst2__seed1", "a__mrpc__seed1", "b__mrpc__seed1"]
    assert specs[0].overrides["train"] == {"lr": 5e-5, "steps": 9, "seed": 1}  # the variant beats the profile
    assert specs[1].overrides["train"]["lr"] == 1e-3 and specs[3].overrides["train"]["steps"] == 5
    assert nest({"a.b.c": 1, "a": {"b": {"d": 2}}}) == {"a": {"b": {"c": 1, "d": 2}}}
    with pytest.raises(ValueError, match="--only names unknown runs"):
        plan.expand(only=["c"])
    with pytest.raises(ValueError, match="--runs names unknown runs"):  # a script's own flag
        plan.expand(only=["c"], flag="--runs")
    with pytest.raises(ValueError, match="no profile"):
        load_plan(tmp_path / "plan.yaml", "nope")


def test_ablate_seeds_replace_the_profiles_and_bad_seeds_are_refused(tmp_path, capsys):
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump({"seeds": [1], "runs": {"a": {"train.lr": 5e-5}, "b": {}}}))
    assert main(["ablate", str(tmp_path / "plan.yaml"), "--only", "b", "--seeds", "7,8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs = 1 variants x 1 tasks x 2 seeds" in out
    assert "- b__sst2__seed7 (config ok)" in out and "- b__sst2__seed8 (config ok)" in out and "seed1" not in out
    assert main(["ablate", str(tmp_path / "plan.yaml"), "--seeds", "7,x", "--dry-run"]) == 2
    assert "--seeds takes comma-separated integers (e.g. 42,43,44), got '7,x'" in capsys.readouterr().err



def test_save_configs_keeps_the_config_each_run_would_train_with(tmp_path, capsys):
    """``--save-configs DIR`` runs nothing and leaves, per run, the file the runner gives ``aptune train --config``."""
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({"seeds": [1], "runs": {"a": {"train.lr": 5e-5}, "b": {}}}))
    runs, saved = tmp_path / "runs", tmp_path / "configs"
    assert main(["ablate", str(plan_file), "--only", "a", "--seeds", "7", "--runs-dir", str(runs),
                 "--save-configs", str(saved)]) == 0
    assert f"aptune train --config {saved}/a__sst2__seed7.yaml" in capsys.readouterr().out
    assert sorted(p.name for p in saved.iterdir()) == ["a__sst2__seed7.yaml"] and not runs.exists()
    plan = dataclasses.replace(load_plan(plan_file), seeds=[7])
    (spec,) = plan.expand(["a"])
    assert yaml.safe_load((saved / "a__sst2__seed7.yaml").read_text()) == plan.run_config(spec)
    config = load_config(saved / "a__sst2__seed7.yaml")
    assert (config.train.lr, config.train.seed) == (5e-5, 7)

def test_time_to_accuracy_and_overlap():
    # the statistics (intervals, paired differences, verdicts) are tested in test_ablation_stats.py
    result = {"eval_info": {"primary_metric": "accuracy"},
              "train_info": {"curve": [{"step": 50, "wall": 10.0, "accuracy": 0.70},
                                       {"step": 100, "wall": 20.0, "accuracy": 0.84},
                                       {"step": 150, "wall": 30.0, "accuracy": 0.80}]}}
    assert time_to_score(result, 0.97 * 0.86) == (20.0, 100)  # the first evaluation at or above the target
    assert time_to_score(result, 0.9) == (None, None)
    a = {"heads": {"l0": [0, 1]}, "ffn": {"l0": [0, 1, 2, 3]}, "hidden": [0, 1]}
    b = {"heads": {"l0": [1, 2]}, "ffn": {"l0": [0, 1, 2, 3]}, "hidden": [0, 1]}
    overlap = mask_overlap(a, b)
    assert overlap["heads"] == pytest.approx(1 / 3) and overlap["ffn"] == 1.0 and overlap["hidden"] == 1.0
    assert overlap["all"] == pytest.approx(7 / 9)
