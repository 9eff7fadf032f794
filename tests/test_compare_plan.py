"""The decoder comparison plan (configs/smollm2/compare.yaml) end to end on a tiny random LLaMA.

Three runs through ``aptune ablate``: ``lora`` (dense adapters), ``lora_prune`` (starts from lora's export,
one cut to 70%, then tuning) and ``base`` (``train.steps=0``: evaluated and exported untuned). Each export is
timed (prefill and greedy decoding, in processes of their own) and evaluated by ``aptune eval`` (zero-shot
multiple choice on a few ARC-Easy items, greedy answers to the plan's prompts); then the report is built.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict

import pytest
import torch
import yaml
from helpers import load_benchmark, tiny_llama_dir

from aptune.ablation.plan import deep_merge, load_plan
from aptune.ablation.runner import run_plan
from aptune.cli import main
from aptune.config import load_config, override_config
from aptune.models import load_model

TINY = {"data.max_length": 64, "data.max_train_samples": 48, "data.max_eval_samples": 8, "train.steps": 6,
        "train.batch_size": 4, "train.eval_every": 3, "train.log_every": 2, "prune.start_step": 1,
        "prune.num_steps": 2, "prune.end_fraction": 0.7, "prune.calibration_batches": 2, "train.threads": 1}


def _write_plan(tmp_path, names=("lora", "lora_prune", "base")):
    base, _ = tiny_llama_dir(tmp_path)
    (tmp_path / "prompts.txt").write_text("# a comment line\nName a color.\nCount to three.\n")
    plan = yaml.safe_load(open("configs/smollm2/compare.yaml"))
    plan["base"] = str((tmp_path / "tiny.yaml"))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        "base": str(load_plan("configs/smollm2/compare.yaml").base), "model": {"name": str(base)}}))
    plan["runs"] = {name: plan["runs"][name] for name in names}
    plan["profiles"] = {"tiny": {
        "overrides": TINY,
        "inference": {"batch_sizes": [2], "seq_len": 16, "warmup": 0, "repeats": 1, "threads": 1,
                      "generate": {"batch_size": 1, "prompt_len": 8, "new_tokens": 4}},
        "evaluation": {"tasks": ["arc-easy"], "max_samples": 4, "batch_size": 4, "threads": 1,
                       "prompts": "prompts.txt", "max_new_tokens": 4},
    }}
    plan["default_profile"] = "tiny"
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_comparison_plan_chains_runs_evaluates_exports_and_reports(tmp_path, capsys):
    plan, runs = _write_plan(tmp_path), tmp_path / "runs"
    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 0, capsys.readouterr().out
    results = {p.stem.split("__")[0]: json.loads(p.read_text()) for p in (runs / "results").glob("*.json")}
    assert set(results) == {"lora", "lora_prune", "base"}

    lora, chained, base = results["lora"], results["lora_prune"], results["base"]
    # lora_prune starts from lora's export, cuts once to 70% and tunes again
    lora_export = runs / "runs" / "lora__alpaca__seed42" / "train" / "export"
    assert chained["run_info"]["config"]["model"]["name"] == str(lora_export.resolve())
    assert chained["run_info"]["init_from"] == "lora"
    assert lora["train_info"]["density"] == pytest.approx(1.0) and chained["train_info"]["density"] <= 0.7
    assert chained["inference_info"]["params"] < lora["inference_info"]["params"]
    # base: no tuning step at all, one evaluation at step 0, exported unchanged
    assert [h["step"] for h in base["train_info"]["curve"]] == [0] and base["train_info"]["steps"] == []
    untuned, reference = load_model(base["run_info"]["config"]["model"]["name"], head="causal-lm"), \
        load_model(str(runs / "runs" / "base__alpaca__seed42" / "train" / "export"), head="causal-lm")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(untuned(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)

    for result in results.values():
        gen = result["inference_info"]["generation"]
        assert gen["new_tokens"] == 4 and gen["tokens_per_s"] > 0 and gen["peak_memory_bytes"] > 0
        assert result["inference_info"]["by_batch"]["2"]["median_s"] > 0
        (arc,) = result["eval_info"]["downstream"]
        assert arc["task"] == "arc_easy" and arc["n"] == 4 and 0 <= arc["acc"] <= 1
        answers = result["eval_info"]["generations"]
        assert [a["instruction"] for a in answers] == ["Name a color.", "Count to three."]
        assert all(a["new_tokens"] <= 4 for a in answers)
    # the same subset for every model: the items were drawn with the same seed
    assert len({json.dumps(r["eval_info"]["downstream"][0].get("n")) for r in results.values()}) == 1

    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| `lora_prune` |" in report and "share of lora" in report and "## Greedy answers" in report
    assert (out / "score_vs_latency.png").stat().st_size > 1000


def test_the_peer_rows_run_by_the_peers_own_code_on_a_tiny_llama(tmp_path, capsys):
    """The plan's peer rows: Torch-Pruning's cut (the FFN only, on a grouped-query decoder) to apt's 70% of the
    budgeted parameters within 1%, then PEFT's LoRA; PEFT's AdaLoRA on the dense model; both exports stock
    ``transformers`` folders, timed and evaluated like every other run."""
    plan, runs = _write_plan(tmp_path, ("torchpruning_taylor", "adalora")), tmp_path / "runs"
    assert main(["ablate", str(plan), "--runs-dir", str(runs)]) == 0, capsys.readouterr().out
    results = {p.stem.split("__")[0]: json.loads(p.read_text()) for p in (runs / "results").glob("*.json")}
    taylor, adalora = results["torchpruning_taylor"]["train_info"], results["adalora"]["train_info"]
    assert abs(taylor["params"] - 0.7 * taylor["original_params"]) <= 0.01 * taylor["original_params"]
    assert adalora["density"] == pytest.approx(1.0)
    for result in results.values():
        assert result["run_info"]["status"] == "ok", result["run_info"]["error"]
        assert not result["train_info"]["exported"]["needs_trust_remote_code"]
        (arc,) = result["eval_info"]["downstream"]
        assert arc["n"] == 4 and 0 <= arc["acc"] <= 1
    kept = load_model(str(runs / "runs" / "torchpruning_taylor__alpaca__seed42" / "train" / "export"),
                      head="causal-lm").config
    assert (kept.intermediate_size, kept.hidden_size, kept.num_key_value_heads) == (35, 32, 2)


def test_init_from_must_name_an_earlier_run(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"runs": {"a": {"patch": {}, "init_from": "b"}, "b": {}}}))
    with pytest.raises(ValueError, match="init_from 'b', which must name a run listed before it"):
        load_plan(path)
    # the earlier run has not finished: the chained run is recorded as failed, nothing is started
    (result,) = run_plan(load_plan("configs/smollm2/compare.yaml"), tmp_path / "runs", only=["lora_prune"],
                         echo=lambda *a, **k: None)
    assert result["run_info"]["status"] == "failed" and result["run_info"]["failed_phase"] == "init_from"
    assert "run lora first" in result["run_info"]["error"]
    assert not (tmp_path / "runs" / "runs").exists()


def test_a_finished_chained_run_copied_from_another_machine_is_kept(tmp_path):
    """lora_prune's committed mc500 result, copied to a runs folder where lora's export is missing: a re-run skips
    it (the export path in its request is left out of the comparison) and leaves its file as it was."""
    plan = load_plan("configs/smollm2/compare.yaml", profile="mc500")
    (spec,) = plan.expand(["lora_prune"])
    elsewhere = "/elsewhere/runs/mc500/runs"
    copied = json.loads(open(f"results/llama/mc500/results/{spec.run_id}.json").read())
    copied["run_info"]["request"] = {**spec.overrides, "model": {"name": f"{elsewhere}/{spec.variant.init_from}"
                                                                          f"__alpaca__seed42/train/export"}}
    copied["train_info"]["export"] = f"{elsewhere}/{spec.run_id}/train/export"
    # what the runner adds after its runs (the committed file was written before that step)
    copied["train_info"].update(accuracy_target=None, time_to_accuracy=None, steps_to_accuracy=None)
    path = tmp_path / "runs" / "results" / f"{spec.run_id}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(copied))
    lines = []
    (result,) = run_plan(plan, tmp_path / "runs", only=["lora_prune"], echo=lambda *a, **k: lines.append(a[0]))
    assert result["run_info"]["status"] == "ok" and "lora_prune alpaca seed 42: skipped (finished earlier: ok" in lines[0]
    assert json.loads(path.read_text()) == copied
    assert not (tmp_path / "runs" / "runs").exists()  # nothing was started

    # a changed request is not the same run: it is blocked by the missing export, not skipped
    copied["run_info"]["request"]["train"] = {**copied["run_info"]["request"]["train"], "steps": 1}
    path.write_text(json.dumps(copied))
    (result,) = run_plan(plan, tmp_path / "runs", only=["lora_prune"], echo=lambda *a, **k: None)
    assert result["run_info"]["failed_phase"] == "init_from"


def test_a_plan_that_names_teacher_from_is_refused(tmp_path):
    """Distilling from another run's export left aptune 1.0 (no measured effect); an old plan says so by name."""
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"runs": {"b": {"patch": {}}, "a": {"patch": {}, "teacher_from": "b"}}}))
    with pytest.raises(ValueError, match=r"run 'a': unknown keys \['teacher_from'\]"):
        load_plan(path)


def test_runs_built_on_different_earlier_runs_are_not_twins():
    """Two variants with the same patch that start from different runs' exports train twice."""
    from aptune.ablation.runner import same_runs

    plan = load_plan("configs/smollm2/compare.yaml")
    plan.variants["lora_prune_2"] = dataclasses.replace(plan.variants["lora_prune"], name="lora_prune_2",
                                                        init_from="lora_recovery")
    plan.variants["lora_prune_3"] = dataclasses.replace(plan.variants["lora_prune"], name="lora_prune_3")
    specs = plan.expand(["lora_prune", "lora_prune_2", "lora_prune_3"])
    assert same_runs(plan, specs, "runs") == {"lora_prune_3__alpaca__seed42": "lora_prune__alpaca__seed42"}


def test_prompts_file_and_zero_step_config_errors_name_the_fix(tmp_path):
    from aptune.eval.generate import read_prompts

    with pytest.raises(FileNotFoundError, match="one instruction per line"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="has no instructions"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="prune.before_tuning=true for one cut before any tuning"):
        load_config("configs/smollm2/alpaca.yaml", ["train.steps=0", "prune.before_tuning=false"])
    assert load_config("configs/smollm2/alpaca.yaml", ["train.steps=0"]).train.steps == 0  # one cut, no tuning


@pytest.mark.parametrize("config, run", [("alpaca.yaml", "apt_recovery_round8"),
                                         ("alpaca_wordnet.yaml", "apt_recovery_wordnet")])
def test_a_shipped_recipe_is_the_comparison_run_that_measured_it(config, run):
    """The README's numbers for a config of configs/smollm2/ come from compare.yaml's runs: with the same profile
    overrides on top, the config and the run's patch on the plan's base resolve to the same settings."""
    plan = load_plan("configs/smollm2/compare.yaml", profile="mc500")
    (spec,) = plan.expand([run])
    # the run: the plan's base, the profile's overrides and the run's patch; the config: the profile's alone
    shared = deep_merge(plan.overrides, {"data": {"task": spec.task}, "train": {"seed": spec.seed}})
    measured = asdict(override_config(load_config(plan.base), spec.overrides))
    shipped = asdict(override_config(load_config(f"configs/smollm2/{config}"), shared))
    del measured["output_dir"], shipped["output_dir"]  # each names its own folder
    assert shipped == measured


def test_train_rss_takes_the_export_an_init_from_run_starts_from_from_the_runs_folder(tmp_path):
    """benchmarks/train_rss.py measures a run that starts from an earlier run's export (init_from) when it is told
    where that export is, and says what is missing when it is not."""
    train_rss = load_benchmark("train_rss")
    plan = load_plan(train_rss.PLAN, train_rss.PROFILE)
    name = "lora_prune"  # init_from: lora, at the same seed
    with pytest.raises(SystemExit, match="give --runs-dir"):
        train_rss.run_config(plan, name)
    with pytest.raises(SystemExit, match="no export at .*lora__alpaca__seed42"):
        train_rss.run_config(plan, name, tmp_path)
    export = tmp_path / "runs" / "lora__alpaca__seed42" / "train" / "export"
    export.mkdir(parents=True)
    assert train_rss.run_config(plan, name, tmp_path)["model"]["name"] == str(export.resolve())
    assert "name" not in train_rss.run_config(plan, "lora").get("model", {})  # lora starts from the base's model
