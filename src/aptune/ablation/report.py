"""Turn the result JSONs of an ablation plan into ``report.md``, plots and a per-run CSV.

    from aptune.ablation.report import write_report
    write_report("runs/ablations/apt_plan-quick", out_dir="runs/ablations/apt_plan-quick/report")

Everything relative is computed here, from the stored absolute numbers (field_survey.md §4.7):

* time-to-accuracy and steps-to-accuracy: the first evaluation whose dev metric reaches a fraction (97%; 95%
  and 100% go to the CSV) of ``full_finetune``'s *best* dev score on the same task and seed;
* Jaccard overlap of each pruning run's kept blocks with those ``apt`` keeps (same task and seed);
* changes against ``apt`` (and ratios to ``full_finetune`` for times and memory), mean ± std over seeds, and
  a "within noise" verdict from the rule stated on the page (``NOISE`` below).

One table per ablation (a variant, or a ``group`` such as the fixed ranks) shows the metric groups that
ablation must report (the plan's ``reports``, from design.md's table), followed by a generated reading.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# Noise rule (written into the report): a change is "within noise" when |Δ| is below the larger of the seed
# standard deviation (of apt or of the variant, when there are ≥ 2 seeds) and a floor per kind of metric:
NOISE = {
    "score": "one binomial standard error of apt's dev score, √(p(1−p)/n) with n dev examples (1.2 points "
             "at p = 0.85, n = 872)",
    "cost": "5% (CPU timings and RSS move by a few percent from run to run on a shared machine)",
    "steps": "for steps and time to 97%: one evaluation interval (in steps, or apt's mean wall time per interval), "
             "as they are only observed at evaluations, and at least 5%",
    "overlap": "0.02 (Jaccard)",
}
TTA_FRACTIONS = (0.95, 0.97, 1.0)
HEADLINE_FRACTION = 0.97


# ------------------------------------------------------------------------------------------ loading
def load_results(runs_dir: str | Path) -> list[dict]:
    """All result JSONs of a runs folder (``RUNS_DIR/results/*.json``, or ``RUNS_DIR/*.json``)."""
    runs_dir = Path(runs_dir)
    folder = runs_dir / "results" if (runs_dir / "results").is_dir() else runs_dir
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and "run_info" in data:
            results.append(data)
    if not results:
        raise FileNotFoundError(f"no result JSONs in {folder} (run `aptune ablate` first)")
    return results


def _ok(results: list[dict]) -> list[dict]:
    return [r for r in results if r["run_info"]["status"] == "ok"]


def _metric(result: dict) -> str:
    return result["eval_info"]["primary_metric"]


def _scores(result: dict) -> list[tuple[int, float, float]]:
    """(step, wall, primary dev metric) of every evaluation of a run."""
    metric = _metric(result)
    return [(h["step"], h["wall"], h[metric]) for h in result["train_info"]["curve"] if metric in h]


def _prunes(result: dict) -> bool:
    config = result["run_info"].get("config") or {}
    return bool((config.get("prune") or {}).get("enabled"))


# ------------------------------------------------------------------------------------------ computed metrics
def best_score(result: dict) -> float | None:
    scores = [s for _, _, s in _scores(result)]
    return max(scores) if scores else None


def time_to_score(result: dict, target: float) -> tuple[float | None, int | None]:
    """Wall time and step of the first evaluation whose dev metric reaches ``target`` (None, None if never)."""
    for step, wall, score in _scores(result):
        if score >= target:
            return wall, step
    return None, None


def kept_blocks(masks: dict) -> dict[str, set]:
    """Kept blocks per kind as hashable ids: heads/ffn ``(site, original index)``, hidden ``index``."""
    return {
        "heads": {(site, i) for site, kept in masks.get("heads", {}).items() for i in kept},
        "ffn": {(site, i) for site, kept in masks.get("ffn", {}).items() for i in kept},
        "hidden": set(masks.get("hidden", [])),
    }


def jaccard(a: set, b: set) -> float | None:
    union = a | b
    return len(a & b) / len(union) if union else None


def mask_overlap(masks: dict, reference: dict) -> dict[str, float | None]:
    """Jaccard overlap of kept blocks, per kind and combined (every block counted once)."""
    mine, theirs = kept_blocks(masks), kept_blocks(reference)
    out = {kind: jaccard(mine[kind], theirs[kind]) for kind in mine}
    tagged = lambda blocks: {(kind, x) for kind, items in blocks.items() for x in items}  # noqa: E731
    out["all"] = jaccard(tagged(mine), tagged(theirs))
    return out


def _find(results: list[dict], variant: str, task: str, seed: int | None = None) -> list[dict]:
    return [r for r in results if r["run_info"]["variant"] == variant and r["run_info"]["task"] == task
            and (seed is None or r["run_info"]["seed"] == seed)]


def reference_score(results: list[dict], task: str, seed: int) -> tuple[float | None, str]:
    """full_finetune's best dev score: same seed, else the mean over its seeds; with where it came from."""
    same = [best_score(r) for r in _find(results, "full_finetune", task, seed)]
    if same and same[0] is not None:
        return same[0], f"full_finetune seed {seed}"
    others = [b for b in (best_score(r) for r in _find(results, "full_finetune", task)) if b is not None]
    if others:
        return statistics.fmean(others), f"full_finetune, mean over {len(others)} seeds"
    return None, "no full_finetune run"


def run_metrics(result: dict, results: list[dict]) -> dict[str, float | None]:
    """Every scalar the report shows for one finished run (absolute, and computed against other runs)."""
    info, train, inf, ev = result["run_info"], result["train_info"], result["inference_info"], result["eval_info"]
    metric = ev["primary_metric"]
    row: dict[str, float | None] = {
        "final": ev["final"].get(metric), "best_after_pruning": ev["best_after_pruning"],
        "train_time_s": train["train_time_s"], "train_peak_mem": train["peak_rss_bytes"],
        "pruning_acc": train.get("pruning_accuracy") if _prunes(result) else None,
        "params": inf["params"] if inf else None, "disk": inf["disk_bytes"] if inf else None,
        "density": train["density"],
    }
    for b, r in (inf or {}).get("by_batch", {}).items():
        row[f"lat_b{b}"], row[f"p90_b{b}"] = r["median_s"], r["p90_s"]
        row[f"thr_b{b}"], row[f"infmem_b{b}"] = r["throughput"], r["peak_memory_bytes"]
    ref, _ = reference_score(results, info["task"], info["seed"])
    for fraction in TTA_FRACTIONS:
        wall, step = time_to_score(result, fraction * ref) if ref is not None else (None, None)
        pct = int(round(fraction * 100))
        row[f"tta{pct}_s"], row[f"steps{pct}"] = wall, step
    apt = _find(_ok(results), "apt", info["task"], info["seed"])
    overlap = (mask_overlap(train["masks"], apt[0]["train_info"]["masks"])
               if apt and _prunes(result) and train.get("masks") and apt[0]["train_info"].get("masks") else {})
    for kind in ("all", "heads", "ffn", "hidden"):
        row[f"jaccard_{kind}"] = overlap.get(kind)
    return row


# ------------------------------------------------------------------------------------------ metric catalogue
@dataclass(frozen=True)
class Metric:
    """One row of a table.

    Attributes:
        key: the ``run_metrics`` key.
        group: the design's metric group (task_performance, training_time, ...).
        label: row label; ``{metric}`` becomes the task's metric name.
        kind: ``score`` (Δ in points), ``cost`` (time, memory, size: Δ in %, lower is better), ``rate``
            (throughput: Δ in %, higher is better), ``steps`` (Δ in %, lower is better) or ``overlap``.
        vs_ft: also show the ratio to full_finetune (times and memory).
        phrase: how the generated reading names it ("the final dev {metric}"); empty: not in readings,
            which keep to one or two headline numbers per metric group so that they stay readable.
    """

    key: str
    group: str
    label: str
    kind: str
    unit: str = ""
    vs_ft: bool = False
    phrase: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.kind in ("score", "rate", "overlap")


def metric_catalogue(batch_sizes: list[int]) -> list[Metric]:
    """The rows every table draws from, in order; inference rows per timed batch size."""
    rows = [
        Metric("final", "task_performance", "dev {metric}, final", "score", phrase="the final dev {metric}"),
        Metric("best_after_pruning", "task_performance", "dev {metric}, best after the last pruning step", "score",
               phrase="the best dev {metric} after pruning"),
        Metric("train_time_s", "training_time", "training wall time", "cost", "s", True, "training time"),
        Metric("tta97_s", "training_time", "time to 97% of full_finetune", "cost", "s", True,
               "the time to reach 97% of full fine-tuning"),
        Metric("steps97", "training_convergence", "steps to 97% of full_finetune", "steps", "steps",
               phrase="the steps to 97% of full fine-tuning"),
        Metric("train_peak_mem", "training_memory", "peak training memory (RSS)", "cost", "bytes", True,
               "peak training memory"),
    ]
    for i, b in enumerate(batch_sizes):
        first = i == 0  # readings quote the first batch size only
        rows += [Metric(f"lat_b{b}", "inference_time", f"latency, batch {b} (median)", "cost", "latency", True,
                        f"batch-{b} inference latency" if first else ""),
                 Metric(f"p90_b{b}", "inference_time", f"latency, batch {b} (p90)", "cost", "latency", True),
                 Metric(f"thr_b{b}", "inference_time", f"throughput, batch {b}", "rate", "seq/s", True)]
    rows += [Metric(f"infmem_b{b}", "inference_memory", f"peak inference memory, batch {b}", "cost", "bytes", True,
                    f"batch-{b} peak inference memory" if i == 0 else "") for i, b in enumerate(batch_sizes)]
    rows += [
        Metric("params", "inference_memory", "parameters (exported model)", "cost", "count", True,
               "the exported parameter count"),
        Metric("disk", "inference_memory", "size on disk", "cost", "bytes", True),
        Metric("pruning_acc", "pruning_accuracy", "dev {metric} at the target density, before recovery", "score",
               phrase="the dev {metric} at the target density before recovery"),
        Metric("jaccard_all", "pruning_accuracy", "Jaccard of kept blocks with apt, all", "overlap",
               phrase="the overlap of its kept blocks with apt's (Jaccard)"),
        Metric("jaccard_heads", "pruning_accuracy", "Jaccard with apt, attention heads", "overlap"),
        Metric("jaccard_ffn", "pruning_accuracy", "Jaccard with apt, FFN neurons", "overlap"),
        Metric("jaccard_hidden", "pruning_accuracy", "Jaccard with apt, hidden dimensions", "overlap"),
    ]
    return rows


# ------------------------------------------------------------------------------------------ numbers and text
@dataclass
class Stat:
    mean: float | None
    std: float | None  # None with fewer than two seeds
    n: int  # seeds with a value
    total: int = 0  # seeds run (a time-to-accuracy may be missing because the target was never reached)

    @classmethod
    def of(cls, values: list[float | None]) -> "Stat":
        total = len(values)
        values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not values:
            return cls(None, None, 0, total)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values),
                   total)


def _scale(value: float, unit: str) -> tuple[float, str, int]:
    """(scaled value, unit text, decimals) for a magnitude, chosen from the mean so ± uses the same unit."""
    a = abs(value)
    if unit == "bytes":
        return (value / 2**30, "GiB", 2) if a >= 2**30 else (value / 2**20, "MiB", 1)
    if unit == "s":
        return (value / 60, "min", 1) if a >= 120 else (value, "s", 1)
    if unit == "latency":
        return (value, "s", 2) if a >= 10 else (value * 1e3, "ms", 1)
    if unit == "count":
        return (value / 1e6, "M", 2) if a >= 1e6 else ((value / 1e3, "k", 1) if a >= 1e3 else (value, "", 0))
    if unit == "steps":
        return value, "", 0
    if unit == "seq/s":
        return value, "seq/s", 1
    return value, "", 3


def fmt(stat: Stat, unit: str = "") -> str:
    """``0.854 ± 0.004``, ``4.1 ± 0.2 min``, ``n/a`` when nothing was measured; a note when seeds lack a value."""
    if stat.mean is None:
        return "n/a"
    value, text, decimals = _scale(stat.mean, unit)
    factor = value / stat.mean if stat.mean else 1.0
    out = f"{value:.{decimals}f}"
    if stat.std is not None:
        out += f" ± {stat.std * factor:.{decimals}f}"
    out = f"{out} {text}".strip()
    if stat.n < stat.total:
        out += f" ({stat.n} of {stat.total} seeds)"  # the others have no value (e.g. target never reached)
    return out


@dataclass
class Delta:
    """A change against apt: its size in the metric's delta unit, and whether it is within noise."""

    value: float | None  # points (score), percent (cost/rate/steps) or absolute (overlap)
    noise: bool
    threshold: float | None

    def text(self, kind: str) -> str:
        if self.value is None:
            return "n/a"
        unit = {"score": " pts", "overlap": ""}.get(kind, "%")
        decimals = 3 if kind == "overlap" else 1
        out = f"{self.value:+.{decimals}f}{unit}".replace("-", "−")
        return f"{out} (noise)" if self.noise else out


def delta(metric: Metric, base: Stat, other: Stat, n_dev: int | None, resolution: float | None = None) -> Delta:
    """``other`` against ``base`` (apt), with the noise rule of ``NOISE``.

    Args:
        n_dev: dev-set size (the binomial floor for scores).
        resolution: the smallest observable change in the metric's own unit (one evaluation interval for
            steps and time to a score), or None.
    """
    if base.mean is None or other.mean is None:
        return Delta(None, False, None)
    stds = [s for s in (base.std, other.std) if s is not None]
    if metric.kind == "score":
        value = (other.mean - base.mean) * 100
        p = min(max(base.mean, 0.0), 1.0)
        floor = 100 * math.sqrt(p * (1 - p) / n_dev) if n_dev else 0.0
        threshold = max([floor] + [100 * s for s in stds])
    elif metric.kind == "overlap":
        value = other.mean - base.mean
        threshold = max([0.02] + stds)
    else:
        if base.mean == 0:
            return Delta(None, False, None)
        value = (other.mean / base.mean - 1) * 100
        floor = max(5.0, 100 * resolution / abs(base.mean)) if resolution else 5.0
        threshold = max([floor] + [100 * s / abs(base.mean) for s in stds])
    return Delta(value, abs(value) < threshold, threshold)


def _ratio(other: Stat, ft: Stat) -> str:
    if other.mean is None or ft.mean in (None, 0):
        return "n/a"
    return f"×{other.mean / ft.mean:.2f}"


def _sentence(metric: Metric, label: str, d: Delta, base: Stat, other: Stat) -> str:
    """One clause of a reading: ``lowers the final dev accuracy by 1.2 points (0.842 vs 0.854)``."""
    values = f"{fmt(other, metric.unit)} vs {fmt(base, metric.unit)}"
    if d.value is None:
        return f"{label} cannot be compared ({values})"
    if d.noise:
        return f"leaves {label} unchanged within noise ({values})"
    verb = "raises" if d.value > 0 else "lowers"
    size = {"score": f"{abs(d.value):.1f} points", "overlap": f"{abs(d.value):.3f}"}.get(metric.kind,
                                                                                          f"{abs(d.value):.0f}%")
    return f"{verb} {label} by {size} ({values})"


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


# ------------------------------------------------------------------------------------------ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the machines that run ablations
    import matplotlib.pyplot as plt

    return plt


def _short_module(name: str) -> str:
    """``bert.encoder.layer.3.attention.self.query`` -> ``L3 query``."""
    match = re.search(r"(?:layers?|block)\.(\d+)\.", name)
    leaf = name.rsplit(".", 1)[-1]
    return f"L{match.group(1)} {leaf}" if match else leaf


def _layer_of(site: str) -> int:
    match = re.search(r"(\d+)", site)
    return int(match.group(1)) if match else 0


def _event_marks(result: dict) -> tuple[list[int], list[int]]:
    """Steps of pruning events that removed blocks, and of events where some adapter rank grew."""
    prune_steps, growth_steps = [], []
    previous = None
    initial = (result["run_info"].get("config") or {}).get("adapter", {}).get("rank")
    for event in result["train_info"]["events"]:
        if event.get("event") != "prune":
            continue
        if sum((event.get("removed") or {}).values()) > 0:
            prune_steps.append(event["step"])
        ranks = event.get("ranks") or {}
        before = previous if previous is not None else {k: initial for k in ranks}
        if any(r > (before.get(k) or 0) for k, r in ranks.items()):
            growth_steps.append(event["step"])
        previous = ranks
    return prune_steps, growth_steps


def _wall_at(result: dict, step: float) -> float:
    """Wall time at a step, interpolated from the step and evaluation records."""
    import numpy as np

    points = sorted({(r["step"], r["wall"]) for r in result["train_info"]["steps"] + result["train_info"]["curve"]
                     if r.get("wall") is not None})
    if not points:
        return float("nan")
    return float(np.interp(step, [p[0] for p in points], [p[1] for p in points]))


def plot_convergence(results: list[dict], variants: list[str], task: str, path: Path, target: float | None) -> None:
    """Dev metric vs step and vs wall time, one colour per variant (one thin line per seed), with pruning
    (▼) and rank-growth (▲) events marked on each curve and the 97%-of-full_finetune line."""
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    metric = None
    for i, variant in enumerate(variants):
        colour = colours(i % 10)
        style = "--" if variant == "full_finetune" else "-"
        for j, result in enumerate(_find(results, variant, task)):
            metric = _metric(result)
            scores = _scores(result)
            if not scores:
                continue
            steps, walls, values = zip(*scores)
            label = variant if j == 0 else None
            axes[0].plot(steps, values, style, color=colour, label=label, lw=1.5, marker=".")
            axes[1].plot(np.array(walls) / 60, values, style, color=colour, lw=1.5, marker=".")
            pruned, grown = _event_marks(result)
            for marks, symbol in ((pruned, "v"), (grown, "^")):
                if not marks:
                    continue
                y = np.interp(marks, steps, values)
                axes[0].scatter(marks, y, marker=symbol, color=colour, s=36, zorder=3, edgecolors="black",
                                linewidths=0.5)
                axes[1].scatter([_wall_at(result, s) / 60 for s in marks], y, marker=symbol, color=colour, s=36,
                                zorder=3, edgecolors="black", linewidths=0.5)
    for ax in axes:
        if target is not None:
            ax.axhline(target, color="gray", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("wall time (min)")
    axes[0].set_ylabel(f"dev {metric or 'metric'}")
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], marker="v", ls="", color="gray", markeredgecolor="black", label="pruning step"),
                Line2D([], [], marker="^", ls="", color="gray", markeredgecolor="black", label="rank growth"),
                Line2D([], [], ls=":", color="gray", label="97% of full_finetune best")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{task}: convergence")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_tradeoff(rows: dict[str, dict[str, Stat]], task: str, metric: str, batch: int, seq_len, path: Path) -> None:
    """Final dev metric vs inference latency and vs peak inference memory, one point per variant."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    colours, markers = plt.get_cmap("tab10"), "osD^vP*Xph"
    for ax, key, label, scale in ((axes[0], f"lat_b{batch}", f"latency, batch {batch} (ms)", 1e3),
                                  (axes[1], f"infmem_b{batch}", f"peak inference memory, batch {batch} (MiB)",
                                   1 / 2**20)):
        for i, (variant, stats) in enumerate(rows.items()):
            x, y = stats.get(key), stats.get("final")
            if not x or x.mean is None or y.mean is None:
                continue
            # a legend rather than text labels: variants of similar cost would print over each other
            ax.errorbar(x.mean * scale, y.mean, xerr=(x.std or 0) * scale, yerr=y.std or 0, capsize=3,
                        fmt=markers[i % len(markers)], color=colours(i % 10), label=variant)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"dev {metric}, final")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{task}: accuracy vs inference cost (exported models, sequence length {seq_len})")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_kept_structure(results: list[dict], variants: list[str], task: str, path: Path) -> bool:
    """Kept attention heads and FFN neurons per layer (first seed), grouped bars per pruning variant."""
    import numpy as np

    chosen = []
    for variant in variants:
        runs = [r for r in _find(results, variant, task) if _prunes(r) and r["train_info"].get("masks")]
        if runs:
            chosen.append((variant, min(runs, key=lambda r: r["run_info"]["seed"])))
    if not chosen:
        return False
    # totals per site from any run that pruned nothing (all blocks kept)
    dense = [r for r in _find(results, "full_finetune", task) + _find(results, "lora", task)
             if not _prunes(r) and r["train_info"].get("masks")]
    totals = dense[0]["train_info"]["masks"] if dense else None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(chosen)
    for ax, kind, label in ((axes[0], "heads", "attention heads kept"), (axes[1], "ffn", "FFN neurons kept")):
        sites = sorted(chosen[0][1]["train_info"]["masks"][kind], key=_layer_of)
        x = np.arange(len(sites))
        for i, (variant, result) in enumerate(chosen):
            masks = result["train_info"]["masks"]
            hidden = len(masks.get("hidden", []))
            total_hidden = f"/{len(totals['hidden'])}" if totals else ""
            ax.bar(x + (i - (len(chosen) - 1) / 2) * width, [len(masks[kind].get(s, [])) for s in sites], width,
                   label=f"{variant} (hidden {hidden}{total_hidden})")
        if totals:
            ax.plot(x, [len(totals[kind].get(s, [])) for s in sites], "k_", markersize=30, label="unpruned")
        ax.set_xticks(x, [f"L{_layer_of(s)}" for s in sites])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{task}: kept structure per layer (first seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_ranks(results: list[dict], variants: list[str], task: str, path: Path) -> bool:
    """Adapter rank per module over training (first seed), one heatmap per variant whose ranks grow."""
    import numpy as np

    panels = []
    for variant in variants:
        runs = _find(results, variant, task)
        if not runs:
            continue
        result = min(runs, key=lambda r: r["run_info"]["seed"])
        events = [e for e in result["train_info"]["events"] if e.get("event") == "prune" and e.get("ranks")]
        if not events or not _event_marks(result)[1]:
            continue
        modules = list(events[0]["ranks"])
        initial = (result["run_info"].get("config") or {}).get("adapter", {}).get("rank", 0)
        grid = np.array([[initial] * len(modules)] + [[e["ranks"].get(m, 0) for m in modules] for e in events]).T
        panels.append((variant, modules, [0] + [e["step"] for e in events], grid))
    if not panels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1, 0.32 * len(panels[0][1]) + 2),
                             squeeze=False)
    for ax, (variant, modules, steps, grid) in zip(axes[0], panels):
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(steps)), steps, fontsize=7)
        ax.set_yticks(range(len(modules)), [_short_module(m) for m in modules], fontsize=7)
        ax.set_xlabel("step (0 = initial rank)")
        ax.set_title(variant, fontsize=9)
        if grid.size <= 400:
            for (i, j), value in np.ndenumerate(grid):
                ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=6, color="white")
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.suptitle(f"{task}: adapter ranks per module over training (first seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ the report
PROTOCOL = [
    ("task performance",
     "the task's dev metric (accuracy; F1 for MRPC; MCC for CoLA; Pearson/Spearman for STS-B; acc and acc_norm "
     "for multiple choice), best after the final pruning step and final.",
     "The dev set is evaluated every `train.eval_every` steps and at the last step. *Final* = the last "
     "evaluation; *best after the last pruning step* = the best evaluation at or after it (over all "
     "evaluations for runs that do not prune)."),
    ("training time",
     "wall time of the run, and time-to-accuracy = wall time until the dev metric first reaches 97% of the "
     "`full_finetune` score.",
     "Wall time = the training loop's time, evaluations included (process start-up, model loading and export "
     "are excluded; they are stored as `process_time_s`). The `full_finetune` score is its **best** dev score "
     "during training, same task and seed (the mean over its seeds when that seed has none). Time-to-accuracy "
     "is read at evaluations, so its resolution is one evaluation interval; *n/a* = never reached."),
    ("training convergence",
     "the dev-metric curve over steps and wall time, with pruning and rank-growth events marked, and steps to "
     "97%.",
     "Curves plot every evaluation; ▼ marks a pruning step that removed blocks, ▲ a step where some adapter "
     "rank grew; steps to 97% uses the same target as time-to-accuracy."),
    ("training memory",
     "peak memory of the run (CUDA `max_memory_allocated` on a GPU; peak RSS of the run's own process on a "
     "CPU, so each run gets its own process).",
     "Each run trains in its own `python -m aptune train` process; the number is that process's peak RSS "
     "(`ru_maxrss`): interpreter, libraries, data, model, optimizer state and teacher together. The training "
     "loop does not record CUDA `max_memory_allocated` yet, so GPU runs also show peak RSS."),
    ("inference time and memory",
     "the exported, merged model; latency (median of repeated timed forward passes after warm-up) and "
     "throughput at batch 32 and 128, sequence length 128; peak memory during inference; parameter count and "
     "size on disk.",
     "The export is reloaded in a fresh process per batch size (`python -m aptune.ablation.inference`), "
     "float32, eval mode, "
     "`torch.inference_mode`, random token ids without padding; per batch size {warmup} untimed then "
     "{repeats} timed passes at sequence length {seq_len}, {threads} thread(s); p90 is reported too; "
     "throughput = batch / median. Peak inference memory = weight bytes + peak activation memory, where on "
     "CPU the activation peak is `VmHWM` − `VmRSS` before the passes, with the high-water mark reset through "
     "`/proc/self/clear_refs` (on CUDA: `max_memory_allocated` − weights). Size on disk = the whole export "
     "folder (weights, config, tokenizer)."),
    ("pruning accuracy",
     "the dev metric right after the model reaches the target density, before any recovery training, and the "
     "overlap (Jaccard) of the kept blocks with those `apt` keeps.",
     "The dev set is evaluated right after the last pruning step's cut. Jaccard = |A∩B| / |A∪B| of the kept "
     "blocks, identified by (kind, site, original index), against `apt` on the same task and seed; per kind "
     "(attention heads, FFN neurons, hidden dimensions) and combined, which counts every block once and is "
     "therefore dominated by FFN neurons."),
]


def _variant_order(results: list[dict]) -> list[str]:
    # the method first, then references, then ablations, each in the plan file's order (run_info.plan_index)
    order = {"method": 0, "reference": 1, "ablation": 2}
    seen: dict[str, tuple] = {}
    for r in results:
        info = r["run_info"]
        seen.setdefault(info["variant"], (order.get(info.get("role"), 3), info.get("plan_index", 10**6),
                                          info["variant"]))
    return [v for v, _ in sorted(seen.items(), key=lambda item: item[1])]


def _groups(results: list[dict], variants: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for variant in variants:
        info = next(r["run_info"] for r in results if r["run_info"]["variant"] == variant)
        if info.get("role") == "ablation":
            groups.setdefault(info.get("group") or variant, []).append(variant)
    return groups


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731  (a bare | would end the cell)
    return ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(map(cell, row)) + " |" for row in rows]]


def provenance(all_results: list[dict], n_failed: int) -> list[str]:
    """Two lines saying where a report's numbers come from: plan, runs, commit, versions, machine."""
    meta = next((r for r in all_results if r["run_info"]["status"] == "ok"), all_results[0])["meta_info"]
    tasks = sorted({r["run_info"]["task"] for r in all_results})
    seeds = sorted({r["run_info"]["seed"] for r in all_results})
    return [
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(all_results)} result files "
        f"({len(all_results) - n_failed} finished, {n_failed} failed). Plan "
        f"`{all_results[0]['run_info'].get('plan')}`, profile `{all_results[0]['run_info'].get('profile')}`; tasks "
        f"{', '.join(tasks)}; seeds "
        f"{', '.join(map(str, seeds))}.",
        f"aptune {meta['versions'].get('aptune')} at commit `{meta.get('aptune_git_sha')}`"
        f"{' (with uncommitted changes)' if meta.get('aptune_git_dirty') else ''}; torch "
        f"{meta['versions'].get('torch')}, transformers {meta['versions'].get('transformers')}, Python "
        f"{meta.get('python')}; {meta.get('cpu')} ({meta.get('cpu_count')} cores)"
        f"{'; GPUs: ' + ', '.join(meta['gpus']) if meta.get('gpus') else '; no GPU'}.",
    ]


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md``, the PNG plots and ``runs.csv`` for a runs folder; return the report's path."""
    runs_dir = Path(runs_dir)
    out = Path(out_dir) if out_dir else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    all_results = load_results(runs_dir)
    results = _ok(all_results)
    failed = [r for r in all_results if r["run_info"]["status"] != "ok"]
    variants = _variant_order(all_results)
    tasks = sorted({r["run_info"]["task"] for r in all_results})
    infos = {r["run_info"]["variant"]: r["run_info"] for r in all_results}

    per_run = {r["run_info"]["name"]: run_metrics(r, results) for r in results}
    _write_csv(out / "runs.csv", results, per_run)

    inference = next((r["inference_info"] for r in results if r.get("inference_info")), None) or {}
    batch_sizes = [int(b) for b in inference.get("by_batch", {})] or [32, 128]
    catalogue = metric_catalogue(batch_sizes)
    lines = [
        f"# Ablation report: `{runs_dir}`",
        "",
        *provenance(all_results, len(failed)),
        "",
        "## Protocol",
        "",
        "One protocol for every run. Each metric: the design's definition (quoted), then how it was measured here.",
        "",
    ]
    settings = {"warmup": inference.get("warmup", "?"), "repeats": inference.get("repeats", "?"),
                "seq_len": inference.get("seq_len", "?"), "threads": inference.get("threads", "?")}
    for name, definition, here in PROTOCOL:
        lines += [f"- **{name}**: “{definition}”", f"  Here: {here.format(**settings)}"]
    lines += [
        "",
        "Changes are against `apt` (same task, mean over seeds): points for dev metrics, percent for times, "
        "memory, sizes and steps, absolute for Jaccard; times and memory also as a ratio to `full_finetune`. "
        "Values are mean ± standard deviation over seeds (no ± with one seed). A change is marked *(noise)* "
        "when its size is below the larger of the seeds' standard deviation and a floor: "
        + "; ".join(f"{kind}: {text}" for kind, text in NOISE.items()) + ".",
        "",
    ]
    if failed:
        lines += ["## Failed runs", ""]
        lines += _table(["run", "phase", "error (last line)"],
                        [[f"`{r['run_info']['name']}`", str(r["run_info"].get("failed_phase")),
                          ((r["run_info"].get("error") or "").strip().splitlines() or [""])[-1][:160]]
                         for r in failed])
        lines.append("")

    for task in tasks:
        lines += _task_section(task, results, variants, infos, catalogue, per_run, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _stats(results: list[dict], per_run: dict, variant: str, task: str) -> dict[str, Stat]:
    rows = [per_run[r["run_info"]["name"]] for r in _find(results, variant, task)]
    keys = {k for row in rows for k in row}
    return {k: Stat.of([row.get(k) for row in rows]) for k in keys}


def _task_section(task, results, variants, infos, catalogue, per_run, out) -> list[str]:
    task_results = [r for r in results if r["run_info"]["task"] == task]
    lines = [f"## Task `{task}`", ""]
    if not task_results:
        return lines + ["No finished runs.", ""]
    metric = _metric(task_results[0])
    stats = {v: _stats(results, per_run, v, task) for v in variants if _find(results, v, task)}
    apt, ft = stats.get("apt", {}), stats.get("full_finetune", {})
    n_dev = task_results[0]["eval_info"].get("n_dev")
    config = (_find(results, "apt", task) or task_results)[0]["run_info"].get("config") or {}
    resolution = _resolutions(config, apt)
    reference = [reference_score(results, task, s)[0] for s in sorted({r["run_info"]["seed"] for r in task_results})]
    reference = [x for x in reference if x is not None]
    target = HEADLINE_FRACTION * statistics.fmean(reference) if reference else None
    lines += [f"Dev metric: {metric} on {n_dev} dev examples. "
              + (f"full_finetune's best dev {metric}: {statistics.fmean(reference):.4f}, so the 97% target is "
                 f"{target:.4f}." if reference else "No full_finetune run: time- and steps-to-97% are n/a."), ""]

    # overview of every variant
    overview = [m for m in catalogue if m.key in ("final", "best_after_pruning", "train_time_s", "tta97_s", "steps97",
                                                  "train_peak_mem", f"lat_b{catalogue_batch(catalogue)}",
                                                  f"infmem_b{catalogue_batch(catalogue)}", "params")]
    lines += ["### All runs", ""]
    lines += _table(["run", "what changes"] + [m.label.format(metric=metric) for m in overview] + ["density"],
                    [[f"`{v}`", infos[v].get("what", "")] + [fmt(s.get(m.key, Stat(None, None, 0)), m.unit)
                                                             for m in overview]
                     + [fmt(s.get("density", Stat(None, None, 0)))] for v, s in stats.items()])
    lines.append("")

    # figures shared by the task
    seq_len = next((r["inference_info"].get("seq_len") for r in task_results if r.get("inference_info")), "?")
    plot_tradeoff(stats, task, metric, catalogue_batch(catalogue), seq_len, out / f"tradeoff_{task}.png")
    plot_convergence(results, list(stats), task, out / f"convergence_{task}_all.png", target)
    figures = [f"![accuracy vs inference cost](tradeoff_{task}.png)",
               f"![convergence, all runs](convergence_{task}_all.png)"]
    if plot_kept_structure(results, list(stats), task, out / f"kept_{task}.png"):
        figures.append(f"![kept heads and neurons per layer](kept_{task}.png)")
    if plot_ranks(results, list(stats), task, out / f"ranks_{task}.png"):
        figures.append(f"![adapter ranks over training](ranks_{task}.png)")
    lines += figures + [""]

    # reference runs, then one section per ablation
    sections = [("reference runs", [v for v in stats if infos[v].get("role") == "reference"])]
    sections += [(group, [v for v in members if v in stats])
                 for group, members in _groups(results, list(stats)).items()]
    for title, members in sections:
        if not members:
            continue
        groups_wanted = list(dict.fromkeys(g for v in members for g in infos[v].get("reports") or []))
        rows = [m for m in catalogue if m.group in groups_wanted
                and any(stats[v].get(m.key, Stat(None, None, 0)).mean is not None for v in members + ["apt"]
                        if v in stats)]
        what = "; ".join(f"`{v}`: {infos[v].get('what', '')}" for v in members)
        lines += [f"### {'Reference runs' if title == 'reference runs' else 'Ablation: ' + title}", "", what, ""]
        lines += [_reading(members, rows, stats, apt, infos, metric, n_dev, resolution, task), ""]
        with_ft = any(m.vs_ft for m in rows)
        header = ["metric", "`apt`"]
        for v in members:
            header += [f"`{v}`", "Δ vs apt"] + (["vs full_finetune"] if with_ft else [])
        table_rows = []
        for m in rows:
            row = [m.label.format(metric=metric), fmt(apt.get(m.key, Stat(None, None, 0)), m.unit)]
            for v in members:
                s = stats[v].get(m.key, Stat(None, None, 0))
                d = delta(m, apt.get(m.key, Stat(None, None, 0)), s, n_dev, resolution.get(m.key))
                row += [fmt(s, m.unit), d.text(m.kind)]
                if with_ft:
                    row.append(_ratio(s, ft.get(m.key, Stat(None, None, 0))) if m.vs_ft and v != "full_finetune"
                               else "—")
            table_rows.append(row)
        lines += _table(header, table_rows) + [""]
        if any(g == "training_convergence" for g in groups_wanted):
            name = f"convergence_{task}_{re.sub(r'[^A-Za-z0-9_]+', '_', title)}.png"
            plot_convergence(results, list(dict.fromkeys(["apt", "full_finetune", *members])), task, out / name,
                             target)
            lines += [f"![convergence: {title}]({name})", ""]
    return lines


def _resolutions(config: dict, apt: dict[str, Stat]) -> dict[str, float]:
    """One evaluation interval, in steps and in apt's wall time: the resolution of steps/time to a score."""
    train = config.get("train") or {}
    if not train.get("eval_every") or not train.get("steps"):
        return {}
    out = {f"steps{int(round(f * 100))}": float(train["eval_every"]) for f in TTA_FRACTIONS}
    wall = apt.get("train_time_s")
    if wall is not None and wall.mean is not None:
        out.update({f"tta{int(round(f * 100))}_s": wall.mean * train["eval_every"] / train["steps"]
                    for f in TTA_FRACTIONS})
    return out


def catalogue_batch(catalogue: list[Metric]) -> int:
    """The first timed batch size (the one the overview and trade-off plot use)."""
    return int(next(m.key for m in catalogue if m.key.startswith("lat_b"))[len("lat_b"):])


def _reading(members, rows, stats, apt, infos, metric, n_dev, resolution, task) -> str:
    """A generated paragraph from the table's headline numbers: what each member changes against apt."""
    if not apt:
        return "_No finished `apt` run on this task: nothing to compare with._"
    parts = []
    for v in members:
        changed, steady, missing, worse, better = [], [], [], 0, 0
        for m in rows:
            s, base = stats[v].get(m.key, Stat(None, None, 0)), apt.get(m.key, Stat(None, None, 0))
            if not m.phrase or (s.mean is None and base.mean is None):
                continue
            phrase = m.phrase.format(metric=metric)
            d = delta(m, base, s, n_dev, resolution.get(m.key))
            if d.value is None:
                missing.append(f"{phrase} ({fmt(s, m.unit)} vs {fmt(base, m.unit)})")
            elif d.noise:
                steady.append(f"{phrase} ({fmt(s, m.unit)} vs {fmt(base, m.unit)})")
            else:
                changed.append(_sentence(m, phrase, d, base, s))
                improved = (d.value > 0) == m.higher_is_better
                better, worse = better + improved, worse + (not improved)
        seeds = max((x.n for x in stats[v].values()), default=0)
        what = infos[v].get("what")
        subject = f"`{v}` ({what})" if what else f"`{v}`"
        text = f"On {task} over {seeds} seed{'s' if seeds != 1 else ''}, against `apt`, {subject} "
        text += (_join(changed) + "." if changed else "changes nothing beyond noise.")
        if steady:
            text += f" Within noise: {_join(steady)}."
        if missing:
            text += f" Not comparable (not measured or never reached): {_join(missing)}."
        total = len(changed) + len(steady) + len(missing)
        text += f" Net: better on {better}, worse on {worse} of {total} headline numbers."
        parts.append(text)
    return "\n\n".join(parts)


def _write_csv(path: Path, results: list[dict], per_run: dict) -> None:
    keys = sorted({k for row in per_run.values() for k in row})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "variant", "task", "seed", *keys])
        for r in results:
            info = r["run_info"]
            row = per_run[info["name"]]
            writer.writerow([info["name"], info["variant"], info["task"], info["seed"], *[row.get(k) for k in keys]])
