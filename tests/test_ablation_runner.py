"""The ablation runner on a tiny random BERT: a variant with the same resolved config as another trains once and
is reported under both names; every export is timed side by side in one process; each result carries its
deterministic memory measures and its time to 97% of full fine-tuning; a run whose export is not on this machine
is left out of the timing and named."""

from __future__ import annotations

import json
import shutil

import yaml

from aptune.cli import main

TINY = {"data.max_length": 32, "data.max_train_samples": 256, "data.max_eval_samples": 64, "train.steps": 24,
        "train.batch_size": 8, "train.eval_every": 6, "train.log_every": 4, "prune.density": 0.5,
        "prune.start_step": 4, "prune.num_steps": 3, "prune.end_fraction": 0.75, "prune.warmup_fraction": 0,
        "prune.mask_lr": 0.5, "train.lr": 1e-3, "train.threads": 1}

FULL_FT = {"adapter.rank": 0, "adapter.train_base": True, "prune.enabled": False, "rank.strategy": "none",
           "distill.enabled": False, "train.lr": 1e-4}


def _plan(tmp_path, tiny_base):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_base)}, "data": {"task": "sst2"}}))
    plan = {
        "base": "tiny.yaml",
        "runs": {
            "apt": {"role": "method", "patch": {}, "paper": "SST-2 94.5 (Table 4)"},
            "apt_again": {"what": "spelled differently, the same config", "patch": {"prune.density": 0.5}},
            "full_finetune": {"role": "reference", "patch": FULL_FT},
        },
        "profiles": {"tiny": {"tasks": ["sst2"], "seeds": [7], "overrides": TINY,
                              "inference": {"batch_sizes": [2, 4], "seq_len": 16, "warmup": 1, "repeats": 2,
                                            "threads": 1}}},
        "default_profile": "tiny",
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_same_config_trains_once_exports_are_timed_side_by_side_and_results_carry_memory_and_tta(
        tiny_base, tmp_path, capsys):
    plan, runs = _plan(tmp_path, tiny_base), tmp_path / "runs"
    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "[2/3] apt_again sst2 seed 7: same config as apt__sst2__seed7: reported under both names" in out
    assert sorted(p.name for p in (runs / "runs").iterdir()) == ["apt__sst2__seed7", "full_finetune__sst2__seed7"]

    results = {p.stem: json.loads(p.read_text()) for p in (runs / "results").glob("*.json")}
    apt, again, ft = (results[f"{v}__sst2__seed7"] for v in ("apt", "apt_again", "full_finetune"))
    assert again["run_info"]["same_run_as"] == "apt__sst2__seed7" and again["run_info"]["variant"] == "apt_again"
    assert again["train_info"] == apt["train_info"] and again["eval_info"] == apt["eval_info"]
    assert apt["run_info"]["paper"] == "SST-2 94.5 (Table 4)"

    for result in (apt, again, ft):
        side = result["inference_info"]["side_by_side"]
        assert side["runs"] == ["apt__sst2__seed7", "full_finetune__sst2__seed7"]  # each export timed once
        assert all(side[b]["median_s"] > 0 and side[b]["p90_s"] >= side[b]["median_s"] for b in ("2", "4"))
        memory = result["train_info"]["memory"]
        assert memory["total_bytes"] == sum(memory[k] for k in ("params_bytes", "grads_bytes", "optimizer_bytes",
                                                                "activations_bytes", "held_bytes")) > 0
        model = result["inference_info"]["model_memory"]
        assert model["weight_bytes"] > 0 and 0 < model["by_batch"]["2"]["activation_bytes"] \
            < model["by_batch"]["4"]["activation_bytes"]
    # full fine-tuning trains every weight: its gradients and AdamW moments dwarf the adapters'
    assert ft["train_info"]["memory"]["optimizer_bytes"] > 10 * apt["train_info"]["memory"]["optimizer_bytes"]

    best_ft = max(h["accuracy"] for h in ft["train_info"]["curve"])
    for result in (apt, ft):
        train = result["train_info"]
        assert abs(train["accuracy_target"] - 0.97 * best_ft) < 1e-12
        reached = [h for h in train["curve"] if h["accuracy"] >= train["accuracy_target"]]
        assert train["steps_to_accuracy"] == (reached[0]["step"] if reached else None)

    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 0  # everything is skipped, timings reused
    again_out = capsys.readouterr().out
    assert "skipped" in again_out and "side by side" not in again_out

    # a result copied over from another machine comes without its export: the timing leaves that run out and
    # names it, and its result keeps the timing it had
    shutil.rmtree(ft["train_info"]["export"])
    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 0
    assert "not timed side by side (export not on this machine): full_finetune__sst2__seed7" in capsys.readouterr().out
    after = {p.stem: json.loads(p.read_text()) for p in (runs / "results").glob("*.json")}
    for name in ("apt__sst2__seed7", "apt_again__sst2__seed7"):
        assert after[name]["inference_info"]["side_by_side"]["runs"] == ["apt__sst2__seed7"]
    assert after["full_finetune__sst2__seed7"]["inference_info"]["side_by_side"] == ft["inference_info"]["side_by_side"]
