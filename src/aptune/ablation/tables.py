"""Markdown for the reports: tables, and numbers written with a unit a reader can take in at a glance.

Values are scaled by their mean (``4.1 ± 0.2 min`` rather than ``246.3 ± 12.0 s``), so the ± of a cell (the
half-width of its 95% t-interval) always shares its unit; changes against ``apt`` carry their own unit (points,
percent, or absolute for Jaccard) and the number of seed pairs they rest on.
"""

from __future__ import annotations

from aptune.ablation.catalogue import Metric, overview_rows
from aptune.ablation.stats import Paired, Stat, TaskComparison


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
    if stat.half_width is not None:
        out += f" ± {stat.half_width * factor:.{decimals}f}"
    out = f"{out} {text}".strip()
    if stat.n < stat.total:
        out += f" ({stat.n} of {stat.total} seeds)"  # the others have no value (e.g. target never reached)
    return out


def _signed(value: float, decimals: int) -> str:
    """``+1.2`` / ``−1.2`` with a true minus sign; a value that rounds to zero is ``+0.0``, never ``−0.0``."""
    if round(value, decimals) == 0:
        value = 0.0
    return f"{value:+.{decimals}f}".replace("-", "−")


def _change_decimals(paired: Paired) -> int:
    return 3 if paired.unit == "" else 1


def _unit_suffix(paired: Paired) -> str:
    return {"pts": " pts", "%": "%"}.get(paired.unit, "")


def pairs_text(paired: Paired) -> str:
    return f"{paired.pairs} pair{'s' if paired.pairs != 1 else ''}"


def change_text(paired: Paired) -> str:
    """``−1.8 ± 0.7 pts (3 pairs)``, ``+20.1% (1 pair)``, ``n/a`` without a pair."""
    change = paired.change
    if change.mean is None:
        return "n/a"
    decimals = _change_decimals(paired)
    out = _signed(change.mean, decimals)
    if change.half_width is not None:
        out += f" ± {change.half_width:.{decimals}f}"
    return f"{out}{_unit_suffix(paired)} ({pairs_text(paired)})"


def signed_change(paired: Paired) -> str:
    """The mean change alone, with its unit: ``−1.8 pts``, ``+20.1%``, ``−0.347``."""
    return f"{_signed(paired.change.mean, _change_decimals(paired))}{_unit_suffix(paired)}"


def interval_text(paired: Paired) -> str:
    """``−1.8 pts, 95% CI [−2.5, −1.1], 3 pairs``; the change alone with one pair (there is no interval)."""
    change = paired.change
    if change.mean is None:
        return "no pair"
    out = signed_change(paired)
    if change.half_width is not None:
        decimals = _change_decimals(paired)
        out += f", 95% CI [{_signed(change.low, decimals)}, {_signed(change.high, decimals)}]"
    return f"{out}, {pairs_text(paired)}"


def ratio_text(other: Stat, ft: Stat) -> str:
    """``×0.42``: a run's time or memory as a multiple of full_finetune's."""
    if other.mean is None or ft.mean in (None, 0):
        return "n/a"
    return f"×{other.mean / ft.mean:.2f}"


CELLS_NOTE = ("_Cells: mean over seeds ± half-width of the 95% t-interval, t(0.975, n−1)·sd/√n (one seed: the "
              "value alone). Δ vs apt: paired by seed (variant − apt, same task and seed, seeds both have), mean ± "
              "95% t-interval of the per-seed differences, with the number of pairs; points for dev metrics, "
              "relative change in % for costs, rates and steps, absolute for Jaccard. The verdict follows from "
              "that interval alone._")
DELTA_NOTE = ("_± = half-width of the 95% t-interval over seeds; Δ vs apt = paired by seed (variant − apt), mean ± "
              "95% t-interval over the pairs; the verdict follows from that interval (see Protocol, statistics)._")


# ------------------------------------------------------------------------------------------ the ablation tables
def overview_table(comparison: TaskComparison, catalogue: list[Metric], infos: dict[str, dict],
                   copies: dict[str, str | None]) -> list[str]:
    """Every variant of a task in one table: the headline number of each metric group, and the density.

    Args:
        copies: per variant, the variant whose run it reports (``same_run_as``), marked in the "what" column.
    """
    overview = overview_rows(catalogue)
    header = ["run", "what changes"] + [m.label.format(metric=comparison.metric) for m in overview] + ["density"]
    rows = [[f"`{v}`", what_text(infos[v].get("what", ""), copies.get(v))]
            + [fmt(comparison.stat(v, m.key), m.unit) for m in overview]
            + [fmt(comparison.stat(v, "density"))] for v in comparison.variants]
    return table(header, rows)


def what_text(what: str, copy_of: str | None) -> str:
    """What a variant changes, marked when its numbers are another variant's run (``same_run_as``)."""
    return f"{what} (same run as `{copy_of}`)".strip() if copy_of else what


def ablation_table(comparison: TaskComparison, members: list[str], rows: list[Metric],
                   papers: dict[str, str] | None = None) -> list[str]:
    """``apt`` beside each member: value, paired change against apt, its verdict and, for times and memory,
    the ratio to full_finetune. ``papers`` (per member, the paper's number) goes into the verdict of the first
    task-performance row, so that the paper's effect sits next to the measured one."""
    with_ft = any(m.vs_ft for m in rows)
    header = ["metric", "`apt`"]
    for v in members:
        header += [f"`{v}`", "Δ vs apt (paired)", "verdict"] + (["vs full_finetune"] if with_ft else [])
    paper_row = next((m.key for m in rows if m.group == "task_performance"), None)
    return table(header, [_ablation_row(comparison, members, m, with_ft,
                                        (papers or {}) if m.key == paper_row else {}) for m in rows])


def _ablation_row(comparison: TaskComparison, members: list[str], metric: Metric, with_ft: bool,
                  papers: dict[str, str]) -> list[str]:
    row = [metric.label.format(metric=comparison.metric), fmt(comparison.stat("apt", metric.key), metric.unit)]
    for v in members:
        stat, paired = comparison.stat(v, metric.key), comparison.against_apt(metric, v)
        verdict = paired.verdict if paired.pairs else "n/a"
        if papers.get(v):
            verdict += f"; paper: {papers[v]}"
        row += [fmt(stat, metric.unit), change_text(paired), verdict]
        if with_ft:
            row.append(ratio_text(stat, comparison.stat("full_finetune", metric.key))
                       if metric.vs_ft and v != "full_finetune" else "—")
    return row
