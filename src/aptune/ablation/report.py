"""Turn the result JSONs of an ablation plan into ``report.md``, plots and a per-run CSV.

    from aptune.ablation.report import write_report
    write_report("runs/ablations/apt_plan-quick", out_dir="runs/ablations/apt_plan-quick/report")

This module only composes the report; each part lives in its own module: ``results`` (loading, selecting runs,
provenance), ``metrics`` (numbers derived per run: time-to-accuracy, Jaccard with ``apt``), ``catalogue``
(the table rows), ``stats`` (means with 95% t-intervals over seeds, paired differences against ``apt`` and
their verdicts), ``tables`` and ``readings`` (Markdown and the generated text), ``plots`` and ``protocol``.

One table per ablation (a variant, or a ``group`` such as the fixed ranks) shows the metric groups that
ablation must report (the plan's ``reports``, from docs/design.md's table; pruned variants always add pruning
accuracy), after the paper's number for it and a generated reading.
"""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

from aptune.ablation.catalogue import Metric, metric_catalogue, tradeoff_rows
from aptune.ablation.metrics import HEADLINE_FRACTION, mask_overlap, reference_score, run_metrics, time_to_score
from aptune.ablation.paths import shown_folder
from aptune.ablation.plots import plot_convergence, plot_kept_structure, plot_ranks, plot_tradeoff
from aptune.ablation.protocol import protocol_section
from aptune.ablation.readings import reading
from aptune.ablation.results import (ablation_groups, failed, find_runs, finished, load_results,
                                     measurement_sources, primary_metric, provenance, prunes, report_folder,
                                     same_run_as, variant_order)
from aptune.ablation.stats import Stat, TaskComparison, paired_difference, variant_values
from aptune.ablation.tables import (CELLS_NOTE, DELTA_NOTE, ablation_table, failed_runs_table, overview_table,
                                    what_text)

# Metric, Stat, paired_difference, mask_overlap, time_to_score and load_results stay importable from here,
# where callers (the tests, ``aptune report``) have always found the report's pieces.
__all__ = ["Metric", "Stat", "load_results", "mask_overlap", "paired_difference", "time_to_score", "write_report"]


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md``, the PNG plots and ``runs.csv`` for a runs folder; return the report's path."""
    runs_dir = Path(runs_dir)
    out = report_folder(runs_dir, out_dir)
    all_results = load_results(runs_dir)
    results, failed_runs = finished(all_results), failed(all_results)
    infos = {r["run_info"]["variant"]: r["run_info"] for r in all_results}

    per_run = {r["run_info"]["name"]: run_metrics(r, results) for r in results}
    _write_csv(out / "runs.csv", results, per_run)

    inference = next((r["inference_info"] for r in results if r.get("inference_info")), None) or {}
    sources = measurement_sources(all_results)
    catalogue = metric_catalogue(sources)
    lines = [f"# Ablation report: `{shown_folder(runs_dir)}`", "", *provenance(all_results, len(failed_runs)), "",
             *protocol_section(inference, sources)]
    if failed_runs:
        lines += failed_runs_table(failed_runs)
    variants = variant_order(all_results)
    for task in sorted({r["run_info"]["task"] for r in all_results}):
        lines += _task_section(task, results, variants, infos, catalogue, per_run, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _task_section(task, results, variants, infos, catalogue, per_run, out) -> list[str]:
    """One task: the 97% target, every run in one table, the shared figures, then one part per ablation."""
    task_results = [r for r in results if r["run_info"]["task"] == task]
    lines = [f"## Task `{task}`", ""]
    if not task_results:
        return lines + ["No finished runs.", ""]
    comparison = _comparison(task, results, task_results, variants, per_run)
    reference = _reference_best(results, task, task_results)
    target = HEADLINE_FRACTION * reference if reference is not None else None
    lines += [_target_line(comparison, reference, target), ""]
    copies = {v: same_run_as(results, v, task) for v in comparison.variants}
    lines += ["### All runs", "", *overview_table(comparison, catalogue, infos, copies), "", CELLS_NOTE, ""]
    lines += _teacher_lines(task_results, comparison.variants, comparison.metric)
    lines += _export_lines(task_results, comparison.variants)
    lines += _task_figures(comparison, results, task_results, catalogue, out, target)
    for title, members in _sections(comparison, infos, results):
        pruned = any(prunes(r) for v in members for r in find_runs(results, v, task))
        lines += _ablation_section(title, members, comparison, catalogue, infos, pruned, copies)
        lines += _group_convergence(title, members, infos, results, comparison.task, out, target)
    return lines


def _comparison(task, results, task_results, variants, per_run) -> TaskComparison:
    """Every variant's per-seed values on the task, with the task's dev metric and dev-set size."""
    by_variant = {v: variant_values(results, per_run, v, task) for v in variants if find_runs(results, v, task)}
    return TaskComparison(task, primary_metric(task_results[0]), task_results[0]["eval_info"].get("n_dev"),
                          by_variant)


def _teacher_lines(task_results, variants, metric: str) -> list[str]:
    """The self-distillation teachers, measured: how many were taken, and each renewal's own dev score against the
    student's score that made it the teacher (``teacher_eval`` events; nothing when no run distilled)."""
    rows = []
    for variant in variants:
        runs = [r for r in task_results if r["run_info"]["variant"] == variant]
        events = [[e for e in r["train_info"].get("events", []) if e.get("event") == "teacher_eval"] for r in runs]
        if not any(events):
            continue
        gaps = [e[metric] - e["student"] for run in events for e in run if e.get("student") is not None]
        firsts = [run[0][metric] for run in events if run]
        gap = (f"{statistics.fmean(gaps) * 100:+.1f} pts (min {min(gaps) * 100:+.1f}, max {max(gaps) * 100:+.1f}; "
               f"{len(gaps)} renewals)" if gaps else "no renewal")
        rows.append(f"| `{variant}` | {statistics.fmean(len(run) for run in events):.1f} | "
                    f"{statistics.fmean(firsts):.4f} | {gap} |")
    if not rows:
        return []
    return ["### The teacher", "",
            f"Each teacher's own dev {metric}, measured when it was taken (`teacher_eval` in `metrics.jsonl`), over the "
            "seeds; a renewal's teacher against the student's score that made it the teacher.", "",
            "| run | teachers per run | first teacher's dev score | teacher − student at a renewal |",
            "|---|---:|---:|---|", *rows, ""]


def _export_lines(task_results, variants) -> list[str]:
    """Where a peer ran (``peer.method``): what each run's export is, and what each peer was given where it cannot do
    what APT does (nothing when no peer ran)."""
    if not any(r["train_info"].get("peer") for r in task_results):
        return []
    rows = []
    for variant in variants:
        results = [r for r in task_results if r["run_info"]["variant"] == variant]
        runs = [r["train_info"] for r in results]
        if not runs or "exported" not in runs[0]:
            continue
        peer = runs[0].get("peer") or {}
        made_by = f"{peer['method']}: {peer.get('pruned', 'no pruning')}" if peer \
            else "aptune" if any(t["density"] < 1 for t in runs) else "aptune: no pruning"
        loads = "no (trust_remote_code)" if any(t["exported"]["needs_trust_remote_code"] for t in runs) else "yes"
        rows.append(f"| `{variant}` | {made_by} | {statistics.fmean(t['params'] for t in runs):,.0f} | "
                    f"{statistics.fmean(r['inference_info']['params'] for r in results):,.0f} | {loads} |")
    return ["### What each run exported", "",
            "Budgeted parameters are those APT's density counts (attention, FFN and norms inside the layers); all "
            "parameters add the embeddings and the head.", "",
            "| run | pruned by | budgeted parameters | all parameters | stock `transformers` loads it as is |",
            "|---|---|---:|---:|---|", *rows, ""]


def _reference_best(results, task, task_results) -> float | None:
    """full_finetune's best dev score, averaged over the task's seeds (None without a full_finetune run)."""
    seeds = sorted({r["run_info"]["seed"] for r in task_results})
    scores = [x for x in (reference_score(results, task, s)[0] for s in seeds) if x is not None]
    return statistics.fmean(scores) if scores else None


def _target_line(comparison: TaskComparison, reference: float | None, target: float | None) -> str:
    metric = comparison.metric
    return (f"Dev metric: {metric} on {comparison.n_dev} dev examples. "
            + (f"full_finetune's best dev {metric}: {reference:.4f}, so the 97% target is {target:.4f}."
               if reference is not None else "No full_finetune run: time- and steps-to-97% are n/a."))


def _task_figures(comparison, results, task_results, catalogue, out, target) -> list[str]:
    """The figures every run of the task shares: trade-off, convergence, kept structure and ranks."""
    task, variants = comparison.task, comparison.variants
    seq_len = next((r["inference_info"].get("seq_len") for r in task_results if r.get("inference_info")), "?")
    plot_tradeoff(comparison, *tradeoff_rows(catalogue), seq_len, out / f"tradeoff_{task}.png")
    plot_convergence(results, variants, task, out / f"convergence_{task}_all.png", target)
    figures = [f"![accuracy vs inference cost](tradeoff_{task}.png)",
               f"![convergence, all runs](convergence_{task}_all.png)"]
    if plot_kept_structure(results, variants, task, out / f"kept_{task}.png"):
        figures.append(f"![kept heads and neurons per layer](kept_{task}.png)")
    if plot_ranks(results, variants, task, out / f"ranks_{task}.png"):
        figures.append(f"![adapter ranks over training](ranks_{task}.png)")
    return figures + [""]


def _sections(comparison: TaskComparison, infos, results) -> list[tuple[str, list[str]]]:
    """(title, variants) of each comparison table: the reference runs, then each ablation or group of them."""
    variants = comparison.variants
    sections = [("reference runs", [v for v in variants if infos[v].get("role") == "reference"])]
    sections += list(ablation_groups(results, variants).items())
    return [(title, members) for title, members in sections if members]


def _reports_wanted(members: list[str], infos) -> list[str]:
    """The metric groups the plan asks these variants to report, in plan order, each once."""
    return list(dict.fromkeys(g for v in members for g in infos[v].get("reports") or []))


def _ablation_section(title, members, comparison: TaskComparison, catalogue, infos, pruned: bool,
                      copies) -> list[str]:
    """Heading, what each member changes, the paper's number, the generated reading, then the table against apt.

    Pruning accuracy and Jaccard are shown for pruned members whatever the plan's ``reports`` says: how much a
    cut costs before recovery, and which blocks it keeps, are part of every pruned variant's story.
    """
    wanted = _reports_wanted(members, infos) + (["pruning_accuracy"] if pruned else [])
    rows = [m for m in catalogue if m.group in wanted
            and any(comparison.stat(v, m.key).mean is not None for v in members + ["apt"])]
    what = "; ".join(f"`{v}`: {what_text(infos[v].get('what', ''), copies.get(v))}" for v in members)
    papers = {v: infos[v]["paper"] for v in members if infos[v].get("paper")}
    heading = "Reference runs" if title == "reference runs" else "Ablation: " + title
    return [f"### {heading}", "", *_paper_lines(papers, members), what, "",
            reading(comparison, members, rows, infos), "", *ablation_table(comparison, members, rows, papers), "",
            DELTA_NOTE, ""]


def _paper_lines(papers: dict[str, str], members: list[str]) -> list[str]:
    """``Paper: ...`` (named per variant when a section has several), or nothing."""
    if not papers:
        return []
    if len(members) == 1:
        return [f"Paper: {papers[members[0]]}", ""]
    # one Markdown paragraph with a line break (two trailing spaces) per variant
    return ["  \n".join(f"Paper (`{v}`): {text}" for v, text in papers.items()), ""]


def _group_convergence(title, members, infos, results, task, out, target) -> list[str]:
    """A convergence plot of the members beside apt and full_finetune, when the plan asks for convergence."""
    if "training_convergence" not in _reports_wanted(members, infos):
        return []
    name = f"convergence_{task}_{re.sub(r'[^A-Za-z0-9_]+', '_', title)}.png"
    plot_convergence(results, list(dict.fromkeys(["apt", "full_finetune", *members])), task, out / name, target)
    return [f"![convergence: {title}]({name})", ""]


def _write_csv(path: Path, results: list[dict], per_run: dict) -> None:
    keys = sorted({k for row in per_run.values() for k in row})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "variant", "task", "seed", *keys])
        for r in results:
            info = r["run_info"]
            row = per_run[info["name"]]
            writer.writerow([info["name"], info["variant"], info["task"], info["seed"], *[row.get(k) for k in keys]])
