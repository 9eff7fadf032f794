"""The ablation report's statistics on hand-made results: intervals and paired differences against SciPy,
verdicts that follow the interval, and the newer result fields (model-byte memory, side-by-side timing, the
runner's time to 97%, ``same_run_as``, ``paper``) used when present and the older ones when absent.

No training here: every result is written by hand, so each expected number can be computed independently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from aptune.ablation.catalogue import Metric
from aptune.ablation.metrics import run_metrics
from aptune.ablation.report import write_report
from aptune.ablation.results import pruning_accuracy
from aptune.ablation.stats import (COSTS_MORE, HELPS, HURTS, NO_EFFECT, NO_PAIRS, ONE_SEED, SAVES, TaskComparison,
                                   paired_difference, variant_values)

SCORE = Metric("final", "task_performance", "dev {metric}, final", "score")
TIME = Metric("train_time_s", "training_time", "training wall time", "cost", "s", True)

# per seed: (final dev accuracy, training seconds); seed 4 exists for the variant only, so it must not be paired
APT = {1: (0.80, 100.0), 2: (0.83, 120.0), 3: (0.81, 110.0)}
NO_DISTILL = {1: (0.78, 90.0), 2: (0.81, 107.0), 3: (0.785, 99.0), 4: (0.90, 50.0)}
PAPER = "RoBERTa-base SST-2 dev 92.9 without self-distillation vs 94.5 with (Table 4)"
MASKS = {"heads": {"layer.0": [0, 1]}, "ffn": {"layer.0": [0, 1, 2]}, "hidden": [0, 1, 2, 3]}
REPORTS = ["task_performance", "training_time", "training_memory", "inference_time", "inference_memory"]


def _result(variant: str, seed: int, score: float, seconds: float, *, role: str = "ablation", prune: bool = True,
            new_fields: bool = True, **run_info) -> dict:
    """One finished run as the runner writes it; ``new_fields`` adds the measurements newer runners record."""
    latency = seconds / 1e4  # distinct per run, so a misplaced number would show
    result = {
        "run_info": {"name": f"{variant}__sst2__seed{seed}", "variant": variant, "task": "sst2", "seed": seed,
                     "status": "ok", "role": role, "what": f"{variant} changes", "group": variant, "plan_index": 0,
                     "reports": REPORTS, "plan": "plan.yaml", "profile": "test",
                     "config": {"prune": {"enabled": prune}, "adapter": {"rank": 8}}, **run_info},
        "train_info": {"train_time_s": seconds, "peak_rss_bytes": 2**30 + seed, "density": 0.4 if prune else 1.0,
                       "curve": [{"step": 10, "wall": seconds / 2, "accuracy": score - 0.01},
                                 {"step": 20, "wall": seconds, "accuracy": score}],
                       "steps": [], "events": [], "pruning_accuracy": score - 0.05 if prune else None,
                       "masks": MASKS if prune else None},
        "inference_info": {"params": 1000, "disk_bytes": 4000, "seq_len": 16, "warmup": 1, "repeats": 2,
                           "threads": 1,
                           "by_batch": {"2": {"median_s": 2 * latency, "p90_s": 3 * latency, "throughput": 7.0,
                                              "peak_memory_bytes": 3 * 2**20}}},
        "eval_info": {"primary_metric": "accuracy", "final": {"accuracy": score}, "best_after_pruning": score,
                      "n_dev": 100},
        "meta_info": {"versions": {"aptune": "0", "torch": "t", "transformers": "x"}, "aptune_git_sha": "abc",
                      "python": "3", "cpu": "cpu", "cpu_count": 1, "gpus": []},
    }
    if new_fields:
        result["train_info"]["memory"] = {"params_bytes": 10, "grads_bytes": 10, "optimizer_bytes": 20,
                                          "activations_bytes": 5 * 2**20, "total_bytes": 5 * 2**20 + 40, "step": 3}
        result["train_info"].update(accuracy_target=0.5, time_to_accuracy=seconds / 4, steps_to_accuracy=10)
        result["inference_info"]["side_by_side"] = {
            "2": {"median_s": latency, "p90_s": 1.5 * latency, "throughput": 9.0}, "runs": ["..."],
            "command": {"2": "python -m aptune bench ..."}}
        result["inference_info"]["model_memory"] = {
            "weight_bytes": 4000, "by_batch": {"2": {"activation_bytes": 2**20, "total_bytes": 2**20 + 4000}}}
    return result


def _plan_results(new_fields: bool = True) -> list[dict]:
    """apt and no_self_distillation over three seeds (the variant has a fourth), a full_finetune, and a run that
    copies another variant's (same resolved config)."""
    results = [_result("apt", s, a, t, role="method", new_fields=new_fields) for s, (a, t) in APT.items()]
    results += [_result("no_self_distillation", s, a, t, new_fields=new_fields, paper=PAPER)
                for s, (a, t) in NO_DISTILL.items()]
    results += [_result("full_finetune", s, 0.85, 150.0, role="reference", prune=False, new_fields=new_fields)
                for s in APT]
    results += [_result("no_adaptive_tuning", s, a - 0.02, t, new_fields=new_fields) for s, (a, t) in APT.items()]
    results += [_result("fixed_rank_r8", s, a - 0.02, t, new_fields=new_fields,
                        same_run_as=f"no_adaptive_tuning__sst2__seed{s}") for s, (a, t) in APT.items()]
    return results


def _comparison(results: list[dict]) -> TaskComparison:
    per_run = {r["run_info"]["name"]: run_metrics(r, results) for r in results}
    variants = list(dict.fromkeys(r["run_info"]["variant"] for r in results))
    return TaskComparison("sst2", "accuracy", 100, {v: variant_values(results, per_run, v, "sst2") for v in variants})


def _scipy_half_width(values) -> float:
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    return (high - low) / 2


def _write(tmp_path, results) -> str:
    folder = tmp_path / "runs" / "results"
    folder.mkdir(parents=True)
    for r in results:
        (folder / f"{r['run_info']['name']}.json").write_text(json.dumps(r))
    return write_report(tmp_path / "runs", tmp_path / "report").read_text()


# ------------------------------------------------------------------------------------------ numbers
def test_cells_are_means_with_t_intervals_and_changes_are_paired_by_seed():
    comparison = _comparison(_plan_results())
    apt_scores = [a for a, _ in APT.values()]
    cell = comparison.stat("apt", "final")
    assert cell.mean == pytest.approx(np.mean(apt_scores), abs=1e-9)
    assert cell.half_width == pytest.approx(_scipy_half_width(apt_scores), abs=1e-9)
    variant_times = [t for _, t in NO_DISTILL.values()]  # the cell keeps all four seeds
    assert comparison.stat("no_self_distillation", "train_time_s").half_width == pytest.approx(
        _scipy_half_width(variant_times), abs=1e-9)

    # scores: points, against SciPy's paired t-test on the three shared seeds only
    paired = comparison.against_apt(SCORE, "no_self_distillation")
    mine = np.array([NO_DISTILL[s][0] for s in APT]) * 100
    theirs = np.array([APT[s][0] for s in APT]) * 100
    low, high = scipy_stats.ttest_rel(mine, theirs).confidence_interval(0.95)
    assert paired.pairs == 3 and paired.unit == "pts"
    assert paired.change.mean == pytest.approx((low + high) / 2, abs=1e-9)
    assert paired.change.half_width == pytest.approx((high - low) / 2, abs=1e-9)

    # costs: the relative change per seed, in percent
    relative = [(NO_DISTILL[s][1] / APT[s][1] - 1) * 100 for s in APT]
    paired = comparison.against_apt(TIME, "no_self_distillation")
    assert paired.pairs == 3 and paired.unit == "%"
    assert paired.change.mean == pytest.approx(np.mean(relative), abs=1e-9)
    assert paired.change.half_width == pytest.approx(_scipy_half_width(relative), abs=1e-9)
    assert paired.verdict == SAVES  # −10%, −10.8%, −10%: the whole interval lies below zero


@pytest.mark.parametrize("metric, apt, other, words", [
    (SCORE, {1: 0.80, 2: 0.81, 3: 0.82}, {1: 0.82, 2: 0.835, 3: 0.84}, HELPS),
    (SCORE, {1: 0.80, 2: 0.81, 3: 0.82}, {1: 0.78, 2: 0.795, 3: 0.80}, HURTS),
    (SCORE, {1: 0.80, 2: 0.81, 3: 0.82}, {1: 0.83, 2: 0.79, 3: 0.83}, NO_EFFECT),
    (SCORE, {1: 0.80}, {1: 0.90}, ONE_SEED),
    (TIME, {1: 100.0, 2: 110.0}, {1: 120.0, 2: 133.0}, COSTS_MORE),
    (TIME, {1: 100.0, 2: 110.0, 3: 90.0}, {1: 80.0, 2: 90.0, 3: 71.0}, SAVES),
    (TIME, {1: 100.0}, {2: 90.0}, NO_PAIRS),
])
def test_the_verdict_follows_the_interval(metric, apt, other, words):
    paired = paired_difference(metric, apt, other)
    assert paired.verdict == words
    if words in (HELPS, COSTS_MORE):
        assert paired.change.low > 0
    elif words in (HURTS, SAVES):
        assert paired.change.high < 0
    elif words == NO_EFFECT:
        assert paired.change.low <= 0 <= paired.change.high


# ------------------------------------------------------------------------------------------ the report
def test_report_quotes_intervals_paper_and_copies_and_uses_the_newer_measurements(tmp_path):
    report = _write(tmp_path, _plan_results())
    apt_scores = [a for a, _ in APT.values()]
    assert f"| `apt` | apt changes | {np.mean(apt_scores):.3f} ± {_scipy_half_width(apt_scores):.3f} |" in report
    assert "| `fixed_rank_r8` | fixed_rank_r8 changes (same run as `no_adaptive_tuning`) |" in report

    section = report.split("### Ablation: no_self_distillation")[1].split("### ")[0]
    assert f"Paper: {PAPER}" in section
    final_row = next(line for line in section.splitlines() if line.startswith("| dev accuracy, final |"))
    assert f"{HURTS}; paper: {PAPER}" in final_row  # −2, −2, −2.5 points: the interval lies below zero
    assert "(3 pairs)" in final_row
    assert "hurts the final dev accuracy (−2.2 pts, 95% CI [" in section  # the reading quotes the interval
    # pruning accuracy and Jaccard are shown though the plan's reports do not ask for them
    assert "| dev accuracy at the target density, before recovery |" in section
    assert "| Jaccard of kept blocks with apt, all |" in section

    # the newer measurements take the rows; the older ones stay beside them, labelled by what they are
    model_bytes = "training memory (model bytes: params + grads + optimizer + saved activations)"
    assert f"| {model_bytes} | 5.0 ± 0.0 MiB |" in section
    assert "| peak training memory (RSS of the training process) |" in section
    assert "| latency, batch 2 (median, side by side) | 11.0 ± " in section  # apt's mean: 110 s / 1e4 s
    assert "(median, own process)" not in section and "(p90, own process)" not in section
    assert "| inference memory, batch 2 (weights + peak activations) | 1.0 ± 0.0 MiB |" in section
    assert "| peak inference memory, batch 2 (RSS, own process) | 3.0 ± 0.0 MiB |" in section
    time_to_97 = np.mean([t / 4 for _, t in APT.values()])  # the runner's number, not one computed here
    assert f"| time to 97% of full_finetune | {time_to_97:.1f} ± " in section
    assert "side by side" in report.split("## Protocol")[1].split("## Task")[0]


def test_report_from_older_results_falls_back_and_gives_no_verdict_with_one_seed(tmp_path):
    results = [r for r in _plan_results(new_fields=False) if r["run_info"]["seed"] == 1]
    report = _write(tmp_path, results)
    section = report.split("### Ablation: no_self_distillation")[1].split("### ")[0]
    assert "model bytes" not in report and "weights + peak activations)" not in section
    assert "| latency, batch 2 (median, own process) | 20.0 ms |" in section  # by_batch: 2 × 100 s / 1e4
    assert "| peak training memory (RSS of the training process) | 1.00 GiB |" in section
    final_row = next(line for line in section.splitlines() if line.startswith("| dev accuracy, final |"))
    assert final_row.startswith("| dev accuracy, final | 0.800 | 0.780 | −2.0 pts (1 pair) | " + ONE_SEED)
    assert "±" not in final_row
    reading = section.split("| metric |")[0]
    assert "cannot be judged: one seed gives no interval" in reading and "hurts" not in reading


def test_provenance_names_every_commit_the_runs_were_trained_at():
    """Runs resumed on a later checkout must not hide behind the first run's commit."""
    from aptune.ablation.results import provenance

    results = _plan_results()
    assert "at commit `abc`;" in provenance(results, 0)[1]
    for r in results[:2]:
        r["meta_info"]["aptune_git_sha"] = "def"
    line = provenance(results, 0)[1]
    assert f"`abc` ({len(results) - 2} runs)" in line and "`def` (2 runs)" in line
    results[1]["meta_info"]["aptune_git_sha"] = "abc"
    assert "`def` (1 run)" in provenance(results, 0)[1]


def test_provenance_names_every_machine_the_runs_were_trained_on():
    """A report over runs from two machines must name both, each with its count, not the first run's alone."""
    from aptune.ablation.results import provenance

    results = _plan_results()
    assert provenance(results, 0)[1].endswith("; torch t, transformers x, Python 3, cpu (1 cores), no GPU.")
    for r in results[:2]:
        r["meta_info"]["cpu"] = "Intel Xeon"
    line = provenance(results, 0)[1]
    assert "Intel Xeon (1 cores), no GPU (2 runs)" in line
    assert f"cpu (1 cores), no GPU ({len(results) - 2} runs)" in line


def test_pruning_accuracy_of_a_cut_before_tuning_is_the_step_0_evaluation_or_none():
    """A run cut before tuning is at its density from step 0; an evaluation logged at a later (rank-growth) step,
    as older results of such runs carry, is after recovery and must not be shown as the pruning accuracy."""
    def result(before_tuning: bool, step: int) -> dict:
        r = _result("apt", 1, 0.8, 100.0)
        r["run_info"]["config"]["prune"]["before_tuning"] = before_tuning
        r["train_info"]["events"] = [{"event": "prune", "step": 10}, {"event": "eval_at_target", "step": step}]
        return r

    assert pruning_accuracy(result(True, 0)) == pytest.approx(0.75)
    assert pruning_accuracy(result(True, 10)) is None
    assert run_metrics(result(True, 10), [])["pruning_acc"] is None
    assert pruning_accuracy(result(False, 10)) == pytest.approx(0.75)  # a scheduled cut reaches its density there
    assert pruning_accuracy(_result("lora", 1, 0.8, 100.0, prune=False)) is None


def test_the_report_names_no_absolute_path_of_its_runs_folder(tmp_path):
    """The side-by-side command the runner records (this machine's interpreter, exports and JSON in the runs
    folder) prints as ``python`` and ``RUNS/...``; the title names the folder, not the machine's path to it."""
    runs = str((tmp_path / "runs").resolve())
    results = _plan_results()
    for r in results:
        r["run_info"]["run_dir"] = f"{runs}/runs/{r['run_info']['name']}"
        r["inference_info"]["side_by_side"]["command"] = {
            "2": f"/root/.pyenv/versions/3.11.7/bin/python -m aptune bench apt__sst2__seed1={runs}/runs/"
                 f"apt__sst2__seed1/train/export --json {runs}/side_by_side_sst2_b2.json"}
    report = _write(tmp_path, results)
    assert runs not in report and str(tmp_path) not in report and "/root/" not in report
    assert ("`python -m aptune bench apt__sst2__seed1=RUNS/runs/apt__sst2__seed1/train/export "
            "--json RUNS/side_by_side_sst2_b2.json`") in report
    assert report.splitlines()[0] == "# Ablation report: `runs`"
