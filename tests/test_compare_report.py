"""The decoder comparison report over several seeds: means with 95% t-intervals, runs paired with lora by seed.

The fixture is the committed comparison (results/llama/results, one seed) with each run copied to two more
seeds whose scores are shifted by known amounts, so every number the report prints can be recomputed with
scipy from the shifted values.
"""

from __future__ import annotations

import copy
import csv
import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from aptune.ablation.compare_report import write_comparison_report

COMMITTED = Path("results/llama/results")
SHIFT = {42: 0.0, 43: 0.02, 44: -0.01}  # added to every multiple-choice score of apt (lora: half of it)
LOSS_SHIFT = {42: 0.0, 43: 0.15, 44: 0.05}  # added to apt's held-out loss (lora: none)


def _seeded(result: dict, seed: int, score_shift: float, loss_shift: float) -> dict:
    result = copy.deepcopy(result)
    info = result["run_info"]
    info["seed"], info["name"] = seed, info["name"].replace("seed42", f"seed{seed}")
    info["config"]["train"]["seed"] = seed
    for task in result["eval_info"]["downstream"]:
        task["acc"] += score_shift
        task["acc_norm"] += score_shift
    result["eval_info"]["final"]["eval_loss"] += loss_shift
    return result


@pytest.fixture()
def three_seeds(tmp_path):
    folder = tmp_path / "runs" / "results"
    folder.mkdir(parents=True)
    for name, score_factor, loss_factor in (("lora", 0.5, 0.0), ("apt", 1.0, 1.0), ("base", 0.0, 0.0)):
        result = json.loads((COMMITTED / f"{name}__alpaca__seed42.json").read_text())
        seeds = SHIFT if name != "base" else {42: 0.0}  # base: one seed only
        for seed in seeds:
            shifted = _seeded(result, seed, score_factor * SHIFT[seed], loss_factor * LOSS_SHIFT[seed])
            (folder / f"{shifted['run_info']['name']}.json").write_text(json.dumps(shifted))
    return tmp_path / "runs"


def _avg(result: dict) -> float:
    return statistics.fmean(t["acc"] for t in result["eval_info"]["downstream"])


def _half_width(values: list[float]) -> float:
    return stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)


def test_several_seeds_give_means_intervals_and_pairs_with_lora(three_seeds, tmp_path):
    report = write_comparison_report(three_seeds, tmp_path / "out").read_text()
    lora = json.loads((COMMITTED / "lora__alpaca__seed42.json").read_text())
    apt = json.loads((COMMITTED / "apt__alpaca__seed42.json").read_text())
    apt_avgs = [_avg(apt) + SHIFT[s] for s in SHIFT]
    lora_avgs = [_avg(lora) + 0.5 * SHIFT[s] for s in SHIFT]
    apt_losses = [apt["eval_info"]["final"]["eval_loss"] + LOSS_SHIFT[s] for s in SHIFT]

    # the quality table: means ± 95% t half-widths over the three seeds; base, with one seed, its value and se
    row = next(line for line in report.splitlines() if line.startswith("| `apt` | 42, 43, 44 |"))
    assert f"**{statistics.fmean(apt_avgs):.3f}** ± {_half_width(apt_avgs):.3f}" in row
    assert f"{statistics.fmean(apt_losses):.3f} ± {_half_width(apt_losses):.3f}" in row
    assert "(se)" in next(line for line in report.splitlines() if line.startswith("| `base` | 42 |"))

    # paired with lora by seed: differences and per-seed shares, each with its interval and the words it backs
    paired = next(line for line in report.splitlines() if line.startswith("| `apt` | 3 |"))
    loss_diffs = [x - lora["eval_info"]["final"]["eval_loss"] for x in apt_losses]
    assert f"{statistics.fmean(loss_diffs):+.3f} ± {_half_width(loss_diffs):.3f}: worse" in paired
    acc_diffs = [100 * (a - b) for a, b in zip(apt_avgs, lora_avgs)]
    assert f"{statistics.fmean(acc_diffs):+.1f} ± {_half_width(acc_diffs):.1f}" in paired
    share = [a / b for a, b in zip(apt_avgs, lora_avgs)]
    assert f"{100 * statistics.fmean(share):.1f}% ± {100 * _half_width(share):.1f}" in paired
    assert "| `base` | 1 |" not in report  # one seed shared with lora: no pair to build an interval from

    # runs.csv: one line per run and seed
    with (tmp_path / "out" / "runs.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert sorted((r["run"], r["seed"]) for r in lines) == sorted(
        [(n, str(s)) for n in ("lora", "apt") for s in SHIFT] + [("base", "42")])


def test_a_run_is_charged_once_for_each_earlier_run_it_starts_from_or_distils_from():
    """init_from's run (same seed) and teacher_from's (its own seed) add their steps and times; a run named by both
    is charged once; peak memory is the highest; an earlier run absent from the folder is not charged."""
    from aptune.ablation.compare_report import run_row

    load = lambda name: json.loads((COMMITTED / f"{name}__alpaca__seed42.json").read_text())  # noqa: E731
    lora, chained, apt = load("lora"), load("lora_prune"), _seeded(load("apt"), 43, 0.0, 0.0)
    runs = {"lora": {42: lora}, "lora_prune": {42: chained}, "apt": {43: apt}}
    steps = lambda r: r["run_info"]["config"]["train"]["steps"]  # noqa: E731
    both = run_row(chained, runs)
    assert chained["run_info"]["init_from"] == "lora" and both["charged_for"] == "lora__alpaca__seed42"
    time = lambda r: r["train_info"]["train_time_s"]  # noqa: E731
    assert both["train_time_s"] == pytest.approx(time(chained) + time(lora))
    assert both["tuning_steps"] == steps(chained) + steps(lora)
    chained["run_info"]["teacher_from"] = {"run": "lora", "seed": None}  # the same run again: charged once
    assert run_row(chained, runs)["train_time_s"] == both["train_time_s"]

    alone = run_row(apt, runs)
    assert alone["charged_for"] == "" and alone["train_time_s"] == apt["train_info"]["train_time_s"]
    apt["run_info"]["teacher_from"] = {"run": "lora", "seed": 42}  # a teacher trained once, at seed 42
    taught = run_row(apt, runs)
    assert taught["charged_for"] == "lora__alpaca__seed42"
    assert taught["process_time_s"] == pytest.approx(apt["train_info"]["process_time_s"]
                                                     + lora["train_info"]["process_time_s"])
    assert taught["peak_train_rss"] == max(apt["train_info"]["peak_rss_bytes"], lora["train_info"]["peak_rss_bytes"])
    apt["run_info"]["teacher_from"] = {"run": "lora", "seed": None}  # lora has no seed 43 here
    assert run_row(apt, runs)["train_time_s"] == apt["train_info"]["train_time_s"]


def test_the_report_names_no_absolute_path_of_a_runs_folder_or_checkout(three_seeds, tmp_path):
    """Commands as the runner records them (absolute paths of this machine's runs folder and interpreter, a
    result copied from a runs folder elsewhere, a prompts file of another checkout) print relative: ``RUNS/``
    for the runs folder each run ran in, ``python``, checkout paths from the repository's own folders."""
    here = str(three_seeds.resolve())
    elsewhere = "/work/other-checkout/runs/ablations/old"
    for path in (three_seeds / "results").glob("*.json"):
        result = json.loads(path.read_text())
        info = result["run_info"]
        runs = elsewhere if info["name"].startswith("base__") else here
        run_dir = f"{runs}/runs/{info['name']}"
        info["run_dir"] = run_dir
        info["command"] = (f"/root/.pyenv/versions/3.11.7/bin/python3.11 -m aptune train --no-latency --config "
                           f"{run_dir}/run.yaml output_dir={run_dir}/train")
        info["inference_command"] = [f"/usr/bin/python3 -m aptune.ablation.inference {run_dir}/train/export --out "
                                     f"{run_dir}/inference_b8.json"]
        info["downstream_command"] = (f"/root/.pyenv/versions/3.11.7/bin/python3.11 -m aptune eval --model "
                                      f"{run_dir}/train/export --prompts /work/wt-mc500/configs/smollm2/prompts.txt")
        path.write_text(json.dumps(result))
    report = write_comparison_report(three_seeds, tmp_path / "out").read_text()

    assert here not in report and elsewhere not in report and str(tmp_path) not in report
    assert "/root/" not in report and "/usr/bin" not in report and "/work/" not in report
    assert ("python -m aptune train --no-latency --config RUNS/runs/apt__alpaca__seed42/run.yaml "
            "output_dir=RUNS/runs/apt__alpaca__seed42/train") in report
    assert "--model RUNS/runs/base__alpaca__seed42/train/export --prompts configs/smollm2/prompts.txt" in report
    assert report.splitlines()[0] == f"# Comparison report: `{three_seeds.name}`"  # outside the current folder
