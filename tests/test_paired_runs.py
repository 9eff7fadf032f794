"""benchmarks/paired_runs.py: per-recipe means and paired differences by seed, with the intervals scipy gives."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import load_benchmark
from scipy import stats


def _module():
    return load_benchmark("paired_runs")


def _run(folder: Path, seed: int, losses: list[float], mc: list[tuple[str, float, float]] | None = None) -> str:
    """A finished run folder as aptune train leaves it (the files the script reads)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"seed": seed}}))
    history = [{"step": 50 * (i + 1), "eval_loss": loss} for i, loss in enumerate(losses)]
    (folder / "summary.json").write_text(json.dumps({"final": history[-1], "history": history}))
    if mc is not None:
        results = [{"task": t, "acc": acc, "acc_norm": acc, "chance": chance} for t, acc, chance in mc]
        (folder / "mc.json").write_text(json.dumps({"results": results}))
    return str(folder)


def test_paired_differences_and_intervals_match_scipy(tmp_path):
    paired_runs = _module()
    base = {42: 2.75, 43: 2.70, 44: 2.81}
    new = {42: 2.34, 43: 2.41, 44: 2.30}
    specs = []
    for name, finals in (("base", base), ("new", new)):
        runs = [_run(tmp_path / f"{name}-{s}", s, [3.0, loss], [("arc-easy", 0.4 + loss / 100, 0.25)])
                for s, loss in finals.items()]
        specs.append(f"{name}=" + ",".join(reversed(runs)))  # order of the folders does not matter: seeds pair
    out = tmp_path / "seeds.json"
    paired_runs.main([*specs, "--json", str(out), "--markdown", str(tmp_path / "seeds.md")])
    table = json.loads(out.read_text())["table"]

    diffs = np.array([new[s] - base[s] for s in (42, 43, 44)])
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    paired = table["held-out loss"]["paired"]["new"]
    assert paired["mean"] == pytest.approx(diffs.mean())
    assert paired["mean"] - paired["half_width"] == pytest.approx(low)
    assert paired["mean"] + paired["half_width"] == pytest.approx(high)
    assert paired["verdict"] == "better"  # lower loss on every seed, interval below zero
    mean = table["held-out loss"]["recipes"]["base"]
    values = np.array(list(base.values()))
    assert mean["mean"] - mean["half_width"] == pytest.approx(
        stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))[0])
    step50 = table["held-out loss at step 50"]["paired"]["new"]  # 3.0 on every run: no difference at all
    assert (step50["mean"], step50["half_width"], step50["verdict"]) == (0, 0, "no effect detectable")
    assert table["MC average margin over chance"]["recipes"]["base"]["mean"] == pytest.approx(
        np.mean([0.4 + v / 100 - 0.25 for v in base.values()]))
    share = table["MC average acc"]["paired"]["new"]["share"]
    assert share["mean"] == pytest.approx(np.mean([(0.4 + new[s] / 100) / (0.4 + base[s] / 100) for s in base]))
    row = f"| MC average acc, share of base's | – | – | {100 * share['mean']:.1f}% ± {100 * share['half_width']:.1f} |"
    assert row in (tmp_path / "seeds.md").read_text().splitlines()


def test_a_recipe_needs_finished_runs_and_distinct_seeds(tmp_path):
    paired_runs = _module()
    one = _run(tmp_path / "a", 42, [2.5])
    two = _run(tmp_path / "b", 42, [2.4])
    with pytest.raises(SystemExit, match="two runs with seed 42"):
        paired_runs.main([f"x={one},{two}", f"y={one}"])
    (tmp_path / "c").mkdir()
    with pytest.raises(SystemExit, match="no summary.json"):
        paired_runs.main([f"x={one}", f"y={tmp_path / 'c'}"])


def test_a_metric_some_runs_lack_uses_the_seeds_that_have_it(tmp_path):
    """A run not evaluated on multiple choice still counts for the loss; the MC rows pair the seeds that have it."""
    paired_runs = _module()
    mc = [("sciq", 0.5, 0.25)]
    base = [_run(tmp_path / "b42", 42, [2.8], mc), _run(tmp_path / "b43", 43, [2.9], mc)]
    new = [_run(tmp_path / "n42", 42, [2.4], mc), _run(tmp_path / "n43", 43, [2.6])]  # seed 43: no mc.json
    out = tmp_path / "seeds.json"
    paired_runs.main(["base=" + ",".join(base), "new=" + ",".join(new), "--json", str(out),
                      "--markdown", str(tmp_path / "seeds.md")])
    table = json.loads(out.read_text())["table"]
    assert table["held-out loss"]["paired"]["new"]["seeds"] == [42, 43]
    assert table["sciq acc"]["paired"]["new"] == {"seeds": [42], "mean": 0.0, "half_width": None,
                                                 "verdict": "one pair: no interval"}
    assert list(table["sciq acc"]["recipes"]["new"]["by_seed"]) == ["42"]
    assert "| sciq acc | 0.500 ± 0.000 | 0.500 (1 seeds) |" in (tmp_path / "seeds.md").read_text()


def _ablation_result(path: Path, seed: int, accuracy: float, pruning_accuracy: float) -> str:
    """The parts of an ``aptune ablate`` result JSON that the script reads."""
    final = {"step": 1000, "accuracy": accuracy}
    path.write_text(json.dumps({
        "run_info": {"seed": seed, "config": {"prune": {"enabled": True, "before_tuning": False}}},
        "train_info": {"curve": [{"step": 500, "accuracy": 0.8}, final], "pruning_accuracy": pruning_accuracy,
                       "events": [{"event": "eval_at_target", "step": 500}]},
        "eval_info": {"primary_metric": "accuracy", "final": final, "best_after_pruning": accuracy}}))
    return str(path)


def test_accuracy_runs_from_ablation_results_and_run_folders_pair_by_seed_higher_is_better(tmp_path):
    """An encoder recipe: the reference from an ablation plan's result JSONs, the variant from run folders; a
    higher dev accuracy on every seed is "better", and a bad JSON is refused by name."""
    paired_runs = _module()
    base = {42: 0.851, 43: 0.846, 44: 0.849}
    new = {42: 0.861, 43: 0.858, 44: 0.862}
    reference = [_ablation_result(tmp_path / f"apt-{s}.json", s, acc, acc - 0.02) for s, acc in base.items()]
    variant = []
    for seed, acc in new.items():
        folder = tmp_path / f"new-{seed}"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"seed": seed}}))
        history = [{"step": 500, "accuracy": 0.8}, {"step": 1000, "accuracy": acc}]
        (folder / "summary.json").write_text(json.dumps({
            "primary_metric": "accuracy", "final": history[-1], "history": history,
            "best_after_pruning": acc, "pruning_accuracy": acc - 0.01}))
        variant.append(str(folder))
    out = tmp_path / "paired.json"
    paired_runs.main(["apt=" + ",".join(reference), "new=" + ",".join(variant), "--json", str(out)])
    table = json.loads(out.read_text())["table"]

    final = table["dev accuracy"]["paired"]["new"]
    diffs = np.array([new[s] - base[s] for s in (42, 43, 44)])
    assert final["mean"] == pytest.approx(diffs.mean()) and final["verdict"] == "better"
    after_cut = table["dev accuracy right after the last pruning step"]["paired"]["new"]
    assert after_cut["mean"] == pytest.approx(diffs.mean() + 0.01) and after_cut["verdict"] == "better"
    assert table["dev accuracy at step 500"]["paired"]["new"]["verdict"] == "no effect detectable"
    assert set(table) == {"dev accuracy", "best dev accuracy after the last pruning step",
                          "dev accuracy right after the last pruning step", "dev accuracy at step 500"}

    (tmp_path / "bad.json").write_text(json.dumps({"final": {}}))
    with pytest.raises(SystemExit, match="bad.json: neither a run record"):
        paired_runs.main([f"apt={tmp_path / 'bad.json'}", "new=" + ",".join(variant)])


def test_ablation_results_bring_their_multiple_choice_scores(tmp_path):
    """The plan's evaluation of each export (``eval_info.downstream``) is paired like the dev metric: here the
    committed mc500 results of lora and apt, whose average acc the report also gives."""
    paired_runs = _module()
    results = Path(__file__).parents[1] / "results/llama/mc500/results"
    runs = {name: [results / f"{name}__alpaca__seed{s}.json" for s in (42, 43, 44)] for name in ("lora", "apt")}
    out = tmp_path / "paired.json"
    paired_runs.main([f"{name}=" + ",".join(map(str, files)) for name, files in runs.items()] + ["--json", str(out)])
    table = json.loads(out.read_text())["table"]
    diffs = []
    for lora_file, apt_file in zip(runs["lora"], runs["apt"]):
        tasks = {name: json.loads(f.read_text())["eval_info"]["downstream"] for name, f in
                 (("lora", lora_file), ("apt", apt_file))}
        assert [t["task"] for t in tasks["apt"]] == ["arc_easy", "arc_challenge", "sciq", "mmlu"]
        diffs.append(np.mean([t["acc"] for t in tasks["apt"]]) - np.mean([t["acc"] for t in tasks["lora"]]))
    paired = table["MC average acc"]["paired"]["apt"]
    assert paired["mean"] == pytest.approx(np.mean(diffs))
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert paired["half_width"] == pytest.approx(half) and paired["verdict"] == "worse"
    assert {"arc_easy acc_norm", "mmlu acc", "MC average margin over chance"} <= set(table)
    # the share of lora's average acc, per seed then averaged, as the comparison report gives it
    by_seed = table["MC average acc"]["recipes"]
    ratios = [by_seed["apt"]["by_seed"][s] / by_seed["lora"]["by_seed"][s] for s in ("42", "43", "44")]
    share = paired["share"]
    assert share["mean"] == pytest.approx(np.mean(ratios))
    assert share["n"] == 3  # the ratios it averages: the table formats the share from this record alone
    assert share["half_width"] == pytest.approx(stats.t.ppf(0.975, 2) * np.std(ratios, ddof=1) / np.sqrt(3))
    assert "share" not in table["held-out loss"]["paired"]["apt"]


def _run_record_module():
    return load_benchmark("run_record")


def test_committed_run_records_compare_as_their_run_folders_do(tmp_path):
    """benchmarks/run_record.py condenses a run folder (its eval record beside it as NAME.mc.json); the records
    give paired_runs the same table as the folders, so committed results stay comparable without the folders."""
    paired_runs, run_record = _module(), _run_record_module()
    mc = [("arc-easy", 0.41, 0.25), ("sciq", 0.52, 0.25)]
    folders = {name: [_run(tmp_path / f"{name}-{s}", s, [3.0, 2.4 + d + s / 1000], mc) for s in (42, 43, 44)]
               for name, d in (("base", 0.3), ("new", 0.0))}
    with (Path(folders["new"][0]) / "metrics.jsonl").open("w") as f:
        f.write(json.dumps({"event": "prune", "step": 1, "k": 1, "removed": {"heads": 2}, "ranks": {"q": 8}}) + "\n")
    records = {}
    for name, runs in folders.items():
        records[name] = []
        for run in runs:
            out = tmp_path / "records" / f"{Path(run).name}.json"
            run_record.main([run, "--name", name, "--command", "aptune train ...", "--out", str(out)])
            assert out.with_suffix(".mc.json").read_text() == (Path(run) / "mc.json").read_text()
            records[name].append(str(out))
    first = json.loads((tmp_path / "records/new-42.json").read_text())
    assert first["pruning_steps"] == [{"step": 1, "k": 1, "removed": {"heads": 2}}]  # ranks left out
    assert first["config"] == {"train": {"seed": 42}} and first["command"] == "aptune train ..."

    tables = []
    for source in (folders, records):
        out = tmp_path / f"table-{len(tables)}.json"
        paired_runs.main([f"{name}=" + ",".join(runs) for name, runs in source.items()] + ["--json", str(out)])
        tables.append(json.loads(out.read_text())["table"])
    assert tables[0] == tables[1]
    assert tables[1]["held-out loss"]["paired"]["new"]["mean"] == pytest.approx(-0.3)
    assert tables[1]["MC average acc"]["recipes"]["new"]["mean"] == pytest.approx(0.465)

    with pytest.raises(SystemExit, match="no summary.json or config.yaml"):
        run_record.main([str(tmp_path / "records"), "--name", "x", "--command", "c", "--out", str(tmp_path / "x.json")])


def test_by_recipe_layout_has_one_row_per_recipe_with_the_tables_numbers(tmp_path):
    """--by-recipe: many recipes against the first, one row each; the cells are the JSON table's numbers, and a
    metric the runs lack is refused with the ones they have."""
    paired_runs = _module()
    results = Path(__file__).parents[1] / "results/llama/mc500/results"
    names = ("apt_recovery_round8", "apt_recovery", "apt_recovery_full")
    specs = [f"{n}=" + ",".join(str(results / f"{n}__alpaca__seed{s}.json") for s in (42, 43, 44)) for n in names]
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    paired_runs.main([*specs, "--by-recipe", "held-out loss,MC average acc", "--json", str(out), "--markdown", str(md)])
    table = json.loads(out.read_text())["table"]
    lines = md.read_text().splitlines()
    assert lines[0] == ("| recipe | seeds | held-out loss | held-out loss, paired − apt_recovery_round8 | MC average acc "
                        "| MC average acc, paired − apt_recovery_round8 |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| `{n}`" for n in names]
    reference = table["held-out loss"]["recipes"]["apt_recovery_round8"]
    assert lines[2] == (f"| `apt_recovery_round8` | 42, 43, 44 | {reference['mean']:.3f} ± {reference['half_width']:.3f} "
                        f"| (reference) | {table['MC average acc']['recipes']['apt_recovery_round8']['mean']:.3f} ± "
                        f"{table['MC average acc']['recipes']['apt_recovery_round8']['half_width']:.3f} | (reference) |")
    full = table["MC average acc"]["paired"]["apt_recovery_full"]
    assert lines[4].endswith(f"| {full['mean']:.3f} ± {full['half_width']:.3f} ({full['verdict']}) |")
    with pytest.raises(SystemExit, match="no metric 'accuracy'; the runs have: 'held-out loss'"):
        paired_runs.main([*specs[:2], "--by-recipe", "accuracy"])


def test_memory_pairs_by_seed_lower_is_better(tmp_path):
    """A run folder's peak RSS and counted peak (summary.json) pair like the losses: less memory is better."""
    paired_runs = _module()
    specs = []
    for name, extra in (("lora", 0), ("pruned", -200 * 2**20)):
        runs = []
        for seed, rss in ((42, 2_900), (43, 2_950), (44, 3_000)):
            run = Path(_run(tmp_path / f"{name}-{seed}", seed, [2.0]))
            summary = json.loads((run / "summary.json").read_text())
            summary.update(peak_rss_bytes=rss * 2**20 + extra + seed * 2**20,
                           memory={"total_bytes": 1_700 * 2**20 + extra // 2})
            (run / "summary.json").write_text(json.dumps(summary))
            runs.append(str(run))
        specs.append(f"{name}=" + ",".join(runs))
    out = tmp_path / "memory.json"
    paired_runs.main([*specs, "--json", str(out)])
    table = json.loads(out.read_text())["table"]
    rss = table["peak training RSS (GiB)"]["paired"]["pruned"]
    assert rss["mean"] == pytest.approx(-200 / 1024) and rss["verdict"] == "better"
    counted = table["counted training peak (GiB)"]["paired"]["pruned"]
    assert counted["mean"] == pytest.approx(-100 / 1024) and counted["half_width"] == pytest.approx(0)
