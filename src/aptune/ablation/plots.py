"""The reports' figures, drawn with matplotlib's Agg backend (the machines that run ablations have no display).

matplotlib is imported only when a figure is drawn, so that loading or tabulating results does not pay for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from aptune.ablation.catalogue import Metric
from aptune.ablation.results import dev_scores, find_runs, primary_metric, prunes
from aptune.ablation.stats import TaskComparison


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, tight: bool = True) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)


def _short_module(name: str) -> str:
    """``bert.encoder.layer.3.attention.self.query`` -> ``L3 query``."""
    match = re.search(r"(?:layers?|block)\.(\d+)\.", name)
    leaf = name.rsplit(".", 1)[-1]
    return f"L{match.group(1)} {leaf}" if match else leaf


def _layer_of(site: str) -> int:
    match = re.search(r"(\d+)", site)
    return int(match.group(1)) if match else 0


# ------------------------------------------------------------------------------------------ convergence
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


def _plot_curve(axes, result: dict, colour, style: str, label: str | None) -> None:
    """One run's dev curve against step and wall time, with its pruning (▼) and rank-growth (▲) events."""
    import numpy as np

    steps, walls, values = zip(*dev_scores(result))
    axes[0].plot(steps, values, style, color=colour, label=label, lw=1.5, marker=".")
    axes[1].plot(np.array(walls) / 60, values, style, color=colour, lw=1.5, marker=".")
    pruned, grown = _event_marks(result)
    for marks, symbol in ((pruned, "v"), (grown, "^")):
        if not marks:
            continue
        y = np.interp(marks, steps, values)
        axes[0].scatter(marks, y, marker=symbol, color=colour, s=36, zorder=3, edgecolors="black", linewidths=0.5)
        axes[1].scatter([_wall_at(result, s) / 60 for s in marks], y, marker=symbol, color=colour, s=36,
                        zorder=3, edgecolors="black", linewidths=0.5)


def _convergence_legend(fig, axes) -> None:
    from matplotlib.lines import Line2D

    handles, _ = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], marker="v", ls="", color="gray", markeredgecolor="black", label="pruning step"),
                Line2D([], [], marker="^", ls="", color="gray", markeredgecolor="black", label="rank growth"),
                Line2D([], [], ls=":", color="gray", label="97% of full_finetune best")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def plot_convergence(results: list[dict], variants: list[str], task: str, path: Path, target: float | None) -> None:
    """Dev metric vs step and vs wall time, one colour per variant (one thin line per seed), with pruning
    (▼) and rank-growth (▲) events marked on each curve and the 97%-of-full_finetune line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    metric = None
    for i, variant in enumerate(variants):
        style = "--" if variant == "full_finetune" else "-"
        for j, result in enumerate(find_runs(results, variant, task)):
            metric = primary_metric(result)
            if dev_scores(result):
                _plot_curve(axes, result, colours(i % 10), style, variant if j == 0 else None)
    for ax in axes:
        if target is not None:
            ax.axhline(target, color="gray", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("wall time (min)")
    axes[0].set_ylabel(f"dev {metric or 'metric'}")
    _convergence_legend(fig, axes)
    fig.suptitle(f"{task}: convergence")
    _save(fig, path)


# ------------------------------------------------------------------------------------------ trade-off
def plot_tradeoff(comparison: TaskComparison, latency: Metric, memory: Metric, seq_len, path: Path) -> None:
    """Final dev metric vs the headline inference latency and memory, one point per variant; the bars are the
    95% t-intervals over seeds (none with one seed)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    colours, markers = plt.get_cmap("tab10"), "osD^vP*Xph"
    for ax, metric, unit, scale in ((axes[0], latency, "ms", 1e3), (axes[1], memory, "MiB", 1 / 2**20)):
        for i, variant in enumerate(comparison.variants):
            x, y = comparison.stat(variant, metric.key), comparison.stat(variant, "final")
            if x.mean is None or y.mean is None:
                continue
            # a legend rather than text labels: variants of similar cost would print over each other
            ax.errorbar(x.mean * scale, y.mean, xerr=(x.half_width or 0) * scale, yerr=y.half_width or 0,
                        capsize=3, fmt=markers[i % len(markers)], color=colours(i % 10), label=variant)
        ax.set_xlabel(f"{metric.label} ({unit})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"dev {comparison.metric}, final")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{comparison.task}: accuracy vs inference cost (exported models, sequence length {seq_len}; "
                 "bars: 95% t-intervals over seeds)")
    _save(fig, path)


# ------------------------------------------------------------------------------------------ structure and ranks
def _first_pruned_runs(results: list[dict], variants: list[str], task: str) -> list[tuple[str, dict]]:
    """(variant, its first seed's run) for every variant that pruned and recorded its masks."""
    chosen = []
    for variant in variants:
        runs = [r for r in find_runs(results, variant, task) if prunes(r) and r["train_info"].get("masks")]
        if runs:
            chosen.append((variant, min(runs, key=lambda r: r["run_info"]["seed"])))
    return chosen


def _unpruned_masks(results: list[dict], task: str) -> dict | None:
    """Masks of a run that pruned nothing (all blocks kept): the totals per site."""
    dense = [r for r in find_runs(results, "full_finetune", task) + find_runs(results, "lora", task)
             if not prunes(r) and r["train_info"].get("masks")]
    return dense[0]["train_info"]["masks"] if dense else None


def plot_kept_structure(results: list[dict], variants: list[str], task: str, path: Path) -> bool:
    """Kept attention heads and FFN neurons per layer (first seed), grouped bars per pruning variant."""
    import numpy as np

    chosen = _first_pruned_runs(results, variants, task)
    if not chosen:
        return False
    totals = _unpruned_masks(results, task)
    plt = pyplot()
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
    _save(fig, path)
    return True


def _rank_panel(result: dict):
    """(modules, steps, rank grid) of a run whose ranks grew, or None."""
    import numpy as np

    events = [e for e in result["train_info"]["events"] if e.get("event") == "prune" and e.get("ranks")]
    if not events or not _event_marks(result)[1]:
        return None
    modules = list(events[0]["ranks"])
    initial = (result["run_info"].get("config") or {}).get("adapter", {}).get("rank", 0)
    grid = np.array([[initial] * len(modules)] + [[e["ranks"].get(m, 0) for m in modules] for e in events]).T
    return modules, [0] + [e["step"] for e in events], grid


def plot_ranks(results: list[dict], variants: list[str], task: str, path: Path) -> bool:
    """Adapter rank per module over training (first seed), one heatmap per variant whose ranks grow."""
    import numpy as np

    panels = []
    for variant in variants:
        runs = find_runs(results, variant, task)
        panel = _rank_panel(min(runs, key=lambda r: r["run_info"]["seed"])) if runs else None
        if panel:
            panels.append((variant, *panel))
    if not panels:
        return False
    plt = pyplot()
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
    _save(fig, path, tight=False)
    return True
