"""Two or more recipes over the same seeds, compared run by run: mean ± 95% t-interval per recipe, and each
recipe's paired difference to the first (same seed) with its interval (issue 13: which recovery recipe becomes
the default of configs/smollm2/; issue 11: which self-distillation setting pays on the main recipe).

Each recipe is a list of finished runs, one per seed: ``aptune train`` run folders (the seed is read from the
run's ``config.yaml``), their committed records (``benchmarks/run_record.py``, e.g.
``results/llama/recovery/seeds/*.json``) or result JSONs of ``aptune ablate``
(``results/ablation-standard/results/*.json``), mixed as needed. Metrics: the run's primary dev metric at the end
and at every evaluation (``held-out loss`` for language models, else ``dev <metric>``), the best after the last
pruning step and the value right after it (pruning accuracy) where the run has them, and, when the run has an
``aptune eval`` record (``--mc``: ``mc.json`` inside a run folder, ``NAME.mc.json`` beside a record), every
multiple-choice task's acc / acc_norm and their average over tasks (an ablation result JSON carries its own, in
``eval_info.downstream``).
Where the run recorded them, also the training process's peak RSS and the counted peak step, in GiB.
Losses and memory are better lower, the rest higher. The average acc and margin are also given as a share of the
first recipe's, seed by seed (issue 13's goals are shares of lora's).

    python benchmarks/paired_runs.py \\
        baseline=runs/rec/baseline-s42,runs/rec/baseline-s43,runs/rec/baseline-s44 \\
        recovery=runs/rec/rec-s42,runs/rec/rec-s43,runs/rec/rec-s44 \\
        --json results/llama/recovery/seeds.json --markdown results/llama/recovery/seeds.md

With ``--by-recipe 'held-out loss,MC average acc'`` the markdown has one row per recipe instead (many recipes
against one reference); the JSON is the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from aptune.ablation.results import pruning_accuracy
from aptune.ablation.stats import Stat, interval_side
from aptune.provenance import meta_info


def dev_metrics(primary: str, final: dict, history: list[dict], best_after_pruning: float | None = None,
                pruning_accuracy: float | None = None) -> dict[str, float]:
    """The primary metric at the end, after pruning and at every evaluation, by display name."""
    name = "held-out loss" if primary == "eval_loss" else f"dev {primary}"
    metrics = {name: final[primary]}
    if best_after_pruning is not None:
        metrics[f"best {name} after the last pruning step"] = best_after_pruning
    if pruning_accuracy is not None:
        metrics[f"{name} right after the last pruning step"] = pruning_accuracy  # "pruning accuracy"
    for entry in history:
        if entry["step"] != final["step"]:
            metrics[f"{name} at step {entry['step']}"] = entry[primary]
    return metrics


GIB = 2**30


def memory_metrics(peak_rss_bytes: int | None, counted: dict | None) -> dict[str, float]:
    """The training process's peak RSS and the counted peak step (parameters, gradients, optimizer state and
    the activations saved for backward, ``aptune.bench.memory``), where the run recorded them."""
    metrics = {}
    if peak_rss_bytes:
        metrics["peak training RSS (GiB)"] = peak_rss_bytes / GIB
    if counted and counted.get("total_bytes"):
        metrics["counted training peak (GiB)"] = counted["total_bytes"] / GIB
    return metrics


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "(GiB)" in metric


def run_metrics(summary: dict, history: list[dict], mc_file: Path) -> dict[str, float]:
    """The metrics of one finished run (its summary and evaluations), with its multiple-choice record if any."""
    metrics = dev_metrics(summary.get("primary_metric", "eval_loss"), summary["final"], history,
                          summary.get("best_after_pruning"), summary.get("pruning_accuracy"))
    metrics.update(memory_metrics(summary.get("peak_rss_bytes"), summary.get("memory")))
    if mc_file.is_file():
        metrics.update(mc_metrics(json.loads(mc_file.read_text())["results"]))
    return metrics


def mc_metrics(tasks: list[dict]) -> dict[str, float]:
    """Every multiple-choice task's acc / acc_norm, their average and the average margin over chance."""
    metrics = {}
    for task in tasks:
        metrics[f"{task['task']} acc"] = task["acc"]
        metrics[f"{task['task']} acc_norm"] = task["acc_norm"]
    metrics["MC average acc"] = statistics.fmean(t["acc"] for t in tasks)
    metrics["MC average margin over chance"] = statistics.fmean(t["acc"] - t["chance"] for t in tasks)
    return metrics


def seed_of(run: Path) -> int:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return int(config["train"]["seed"])


def result_file(path: Path, mc_name: str) -> tuple[int, dict[str, float]]:
    """(seed, metrics) of a run record of ``benchmarks/run_record.py`` (its eval record beside it as
    ``NAME.mc.json``) or of an ``aptune ablate`` result JSON."""
    try:
        record = json.loads(path.read_text())
        if {"final", "evals", "config"} <= record.keys():
            mc_file = path.with_name(f"{path.stem}.{mc_name}")
            return int(record["config"]["train"]["seed"]), run_metrics(record, record["evals"], mc_file)
        run, train, dev = record["run_info"], record["train_info"], record["eval_info"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SystemExit(f"{path}: neither a run record of benchmarks/run_record.py (final, evals, config) nor a "
                         "result JSON of aptune ablate (run_info, train_info, eval_info)") from None
    metrics = dev_metrics(dev["primary_metric"], dev["final"], train["curve"], dev.get("best_after_pruning"),
                          pruning_accuracy(record))
    metrics.update(memory_metrics(train.get("peak_rss_bytes"), train.get("memory")))
    if dev.get("downstream"):  # the plan's multiple-choice evaluation of the export
        metrics.update(mc_metrics(dev["downstream"]))
    return int(run["seed"]), metrics


def load_run(run: Path, mc_name: str) -> tuple[int, dict[str, float]]:
    """(seed, metrics) of a finished run folder, a run record or an ablation result JSON."""
    if run.is_file():
        return result_file(run, mc_name)
    if not (run / "summary.json").is_file():
        raise SystemExit(f"{run}: no summary.json (not a finished aptune train run folder) and not a result JSON")
    summary = json.loads((run / "summary.json").read_text())
    return seed_of(run), run_metrics(summary, summary["history"], run / mc_name)


def load_recipe(spec: str, mc_name: str) -> tuple[str, dict[int, dict[str, float]]]:
    """``NAME=RUN,RUN,...`` -> (name, {seed: metrics})."""
    name, sep, runs = spec.partition("=")
    if not sep or not runs:
        raise SystemExit(f"recipe {spec!r}: write NAME=RUN[,RUN...] (run folders, run records or ablation result JSONs)")
    by_seed: dict[int, dict[str, float]] = {}
    for run in (Path(r) for r in runs.split(",")):
        seed, metrics = load_run(run, mc_name)
        if seed in by_seed:
            raise SystemExit(f"recipe {name}: two runs with seed {seed}")
        by_seed[seed] = metrics
    return name, by_seed


def verdict(change: Stat, lower_better: bool) -> str:
    """What the paired interval backs: a direction only when the whole interval lies on one side of zero."""
    side = interval_side(change)
    if side is None:
        return "one pair: no interval"
    if side == 0:
        return "no effect detectable"
    return "better" if (side < 0) == lower_better else "worse"


# metrics also given as a share of the reference's, per seed (issue 13's goals: 90% of lora's average acc, 70% of its
# margin over chance); the same shares as the comparison report's "Against lora, paired by seed"
SHARED = ("MC average acc", "MC average margin over chance")


def compare(recipes: dict[str, dict[int, dict[str, float]]]) -> dict:
    """Per metric: every recipe's values by seed and mean ± interval, and each later recipe's paired change.
    A metric missing from some runs (a run not evaluated on multiple choice) uses the seeds that have it."""
    reference, *others = recipes
    metrics = list(dict.fromkeys(m for runs in recipes.values() for seed in sorted(runs) for m in runs[seed]))
    table = {}
    for metric in metrics:
        have = {name: {seed: runs[seed][metric] for seed in sorted(runs) if metric in runs[seed]}
                for name, runs in recipes.items()}
        if not all(have.values()):
            continue  # some recipe has it on no seed: nothing to compare
        row = {"recipes": {}, "paired": {}}
        for name, values in have.items():
            stat = Stat.of(list(values.values()))
            row["recipes"][name] = {"by_seed": values, "mean": stat.mean, "half_width": stat.half_width}
        for name in others:
            seeds = sorted(set(have[reference]) & set(have[name]))
            change = Stat.of([have[name][s] - have[reference][s] for s in seeds])
            row["paired"][name] = {"seeds": seeds, "mean": change.mean, "half_width": change.half_width,
                                   "verdict": verdict(change, lower_better=lower_is_better(metric))}
            if metric in SHARED:
                share = Stat.of([have[name][s] / have[reference][s] for s in seeds if have[reference][s] > 0])
                row["paired"][name]["share"] = {"mean": share.mean, "half_width": share.half_width, "n": share.n}
        table[metric] = row
    return table


def _cell(mean: float | None, half_width: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" + (f" ± {half_width:.3f}" if half_width is not None else "")


def markdown(table: dict, recipes: list[str]) -> str:
    reference = recipes[0]
    seeds = {r: max(len(row["recipes"][r]["by_seed"]) for row in table.values()) for r in recipes}
    head = ["metric", *(f"{r} (mean ± 95% CI, {seeds[r]} seeds)" for r in recipes),
            *(f"{r} − {reference}, paired" for r in recipes[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric, row in table.items():
        cells = []
        for r in recipes:
            cell, n = row["recipes"][r], len(row["recipes"][r]["by_seed"])
            cells.append(_cell(cell["mean"], cell["half_width"]) + (f" ({n} seeds)" if n < seeds[r] else ""))
        for r in recipes[1:]:
            p = row["paired"][r]
            cells.append(f"{_cell(p['mean'], p['half_width'])} ({p['verdict']}, {len(p['seeds'])} seeds)")
        lines.append("| " + " | ".join([metric, *cells]) + " |")
        if metric in SHARED:
            shares = [_share(row["paired"][r].get("share")) for r in recipes[1:]]
            cells = [f"{metric}, share of {reference}'s", *["–"] * len(recipes), *shares]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _share(share: dict | None) -> str:
    return Stat(share["mean"], share["half_width"], share["n"]).as_percent("–") if share else "–"


def markdown_by_recipe(table: dict, recipes: list[str], metrics: list[str]) -> str:
    """One row per recipe, for a few metrics: its mean ± interval and its paired change to the first recipe
    (the layout for many recipes against one reference, which the metric-per-row table makes too wide)."""
    missing = [m for m in metrics if m not in table]
    if missing:
        raise SystemExit(f"--by-recipe: no metric {', '.join(map(repr, missing))}; the runs have: "
                         + ", ".join(map(repr, table)))
    reference = recipes[0]
    head = ["recipe", "seeds", *(h for m in metrics for h in (m, f"{m}, paired − {reference}"))]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (2 * len(metrics))]
    for r in recipes:
        seeds = sorted({int(s) for m in metrics for s in table[m]["recipes"][r]["by_seed"]})
        cells = [f"`{r}`", ", ".join(map(str, seeds))]
        for m in metrics:
            cell = table[m]["recipes"][r]
            cells.append(_cell(cell["mean"], cell["half_width"]))
            p = table[m]["paired"].get(r)
            cells.append("(reference)" if p is None else f"{_cell(p['mean'], p['half_width'])} ({p['verdict']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+",
                        help="NAME=RUN[,RUN...] (run folders, run records or ablation result JSONs); the first is the reference")
    parser.add_argument("--mc", default="mc.json", help="aptune eval record inside each run folder (NAME.mc.json beside a record)")
    parser.add_argument("--json", type=Path, help="write the table (values by seed, intervals) here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    parser.add_argument("--by-recipe", metavar="METRIC[,METRIC...]",
                        help="markdown with one row per recipe and only these metrics (e.g. 'held-out loss,MC average "
                             "acc'), for many recipes against the first")
    args = parser.parse_args(argv)
    if len(args.recipes) < 2:
        parser.error("give at least two recipes to compare")
    meta = meta_info()  # before this run writes its own (possibly tracked) outputs, which would mark the tree dirty
    recipes = dict(load_recipe(spec, args.mc) for spec in args.recipes)
    table = compare(recipes)
    if args.by_recipe:
        text = markdown_by_recipe(table, list(recipes), args.by_recipe.split(","))
    else:
        text = markdown(table, list(recipes))
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        record = {"command": "python benchmarks/paired_runs.py " + " ".join(args.recipes),
                  "meta_info": meta, "runs": {spec.partition("=")[0]: spec.partition("=")[2].split(",")
                                              for spec in args.recipes},
                  "table": table}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
