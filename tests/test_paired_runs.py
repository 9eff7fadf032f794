"""benchmarks/paired_runs.py: per-recipe means and paired differences by seed, with the intervals scipy gives."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats


def _module():
    path = Path(__file__).parents[1] / "benchmarks/paired_runs.py"
    spec = importlib.util.spec_from_file_location("paired_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
