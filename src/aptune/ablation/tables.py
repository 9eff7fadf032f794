"""Markdown for the reports: tables, and numbers written with a unit a reader can take in at a glance.

Values are scaled by their mean (``4.1 ± 0.2 min`` rather than ``246.3 ± 12.0 s``), so the ± of a cell always
shares its unit; changes against ``apt`` carry their own unit (points, percent, or absolute for Jaccard).
"""

from __future__ import annotations

from aptune.ablation.catalogue import Metric, catalogue_batch
from aptune.ablation.stats import Delta, Stat, TaskComparison


# ------------------------------------------------------------------------------------------ Markdown
def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines; a ``|`` inside a cell is escaped, as a bare one would end the cell."""
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(map(cell, row)) + " |" for row in rows]]


def failed_runs_table(failed: list[dict]) -> list[str]:
    """The ``## Failed runs`` section: each run with the phase it failed in and its error's last line."""
    return ["## Failed runs", "", *table(["run", "phase", "error (last line)"],
                                         [[f"`{r['run_info']['name']}`", str(r["run_info"].get("failed_phase")),
                                           ((r["run_info"].get("error") or "").strip().splitlines() or [""])[-1][:160]]
                                          for r in failed]), ""]


# ------------------------------------------------------------------------------------------ numbers
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


def delta_text(d: Delta, kind: str) -> str:
    """``+1.2 pts``, ``−20.0%``, ``+0.031``; ``(noise)`` appended when the change is within noise."""
    if d.value is None:
        return "n/a"
    unit = {"score": " pts", "overlap": ""}.get(kind, "%")
    decimals = 3 if kind == "overlap" else 1
    out = f"{d.value:+.{decimals}f}{unit}".replace("-", "−")
    return f"{out} (noise)" if d.noise else out


def ratio_text(other: Stat, ft: Stat) -> str:
    """``×0.42``: a run's time or memory as a multiple of full_finetune's."""
    if other.mean is None or ft.mean in (None, 0):
        return "n/a"
    return f"×{other.mean / ft.mean:.2f}"


# ------------------------------------------------------------------------------------------ the ablation tables
OVERVIEW_KEYS = ("final", "best_after_pruning", "train_time_s", "tta97_s", "steps97", "train_peak_mem", "params")


def overview_table(comparison: TaskComparison, catalogue: list[Metric], infos: dict[str, dict]) -> list[str]:
    """Every variant of a task in one table: the headline number of each metric group, and the density."""
    batch = catalogue_batch(catalogue)
    keys = OVERVIEW_KEYS + (f"lat_b{batch}", f"infmem_b{batch}")
    overview = [m for m in catalogue if m.key in keys]
    header = ["run", "what changes"] + [m.label.format(metric=comparison.metric) for m in overview] + ["density"]
    rows = [[f"`{v}`", infos[v].get("what", "")] + [fmt(comparison.stat(v, m.key), m.unit) for m in overview]
            + [fmt(comparison.stat(v, "density"))] for v in comparison.by_variant]
    return table(header, rows)


def ablation_table(comparison: TaskComparison, members: list[str], rows: list[Metric]) -> list[str]:
    """``apt`` beside each member: value, change against apt and, for times and memory, ratio to full_finetune."""
    with_ft = any(m.vs_ft for m in rows)
    header = ["metric", "`apt`"]
    for v in members:
        header += [f"`{v}`", "Δ vs apt"] + (["vs full_finetune"] if with_ft else [])
    return table(header, [_ablation_row(comparison, members, m, with_ft) for m in rows])


def _ablation_row(comparison: TaskComparison, members: list[str], metric: Metric, with_ft: bool) -> list[str]:
    row = [metric.label.format(metric=comparison.metric), fmt(comparison.stat("apt", metric.key), metric.unit)]
    for v in members:
        stat = comparison.stat(v, metric.key)
        row += [fmt(stat, metric.unit), delta_text(comparison.against_apt(metric, v), metric.kind)]
        if with_ft:
            row.append(ratio_text(stat, comparison.stat("full_finetune", metric.key))
                       if metric.vs_ft and v != "full_finetune" else "—")
    return row
