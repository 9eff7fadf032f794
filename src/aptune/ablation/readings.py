"""The generated paragraph under each ablation table: what the variant changes against ``apt``, in words.

A reading quotes only the headline numbers (the catalogue rows with a ``phrase``) and sorts them into real
changes, changes within noise and numbers that cannot be compared, so that a reader sees the verdict without
re-deriving it from the table, and a change hidden in the noise is never reported as an effect.
"""

from __future__ import annotations

from aptune.ablation.catalogue import Metric
from aptune.ablation.stats import Delta, Stat, TaskComparison
from aptune.ablation.tables import fmt


def reading(comparison: TaskComparison, members: list[str], rows: list[Metric], infos: dict[str, dict]) -> str:
    """One paragraph per member of an ablation, from the rows of its table."""
    if not comparison.has_apt:
        return "_No finished `apt` run on this task: nothing to compare with._"
    return "\n\n".join(_member_reading(comparison, v, rows, infos[v].get("what")) for v in members)


def _member_reading(comparison: TaskComparison, variant: str, rows: list[Metric], what: str | None) -> str:
    changed, steady, missing, worse, better = [], [], [], 0, 0
    for m in rows:
        stat, base = comparison.stat(variant, m.key), comparison.stat("apt", m.key)
        if not m.phrase or (stat.mean is None and base.mean is None):
            continue
        phrase = m.phrase.format(metric=comparison.metric)
        d = comparison.against_apt(m, variant)
        if d.value is None:
            missing.append(f"{phrase} ({fmt(stat, m.unit)} vs {fmt(base, m.unit)})")
        elif d.noise:
            steady.append(f"{phrase} ({fmt(stat, m.unit)} vs {fmt(base, m.unit)})")
        else:
            changed.append(_change_clause(m, phrase, d, base, stat))
            improved = (d.value > 0) == m.higher_is_better
            better, worse = better + improved, worse + (not improved)
    seeds = comparison.seeds(variant)
    subject = f"`{variant}` ({what})" if what else f"`{variant}`"
    text = f"On {comparison.task} over {seeds} seed{'s' if seeds != 1 else ''}, against `apt`, {subject} "
    text += (_join(changed) + "." if changed else "changes nothing beyond noise.")
    if steady:
        text += f" Within noise: {_join(steady)}."
    if missing:
        text += f" Not comparable (not measured or never reached): {_join(missing)}."
    total = len(changed) + len(steady) + len(missing)
    return text + f" Net: better on {better}, worse on {worse} of {total} headline numbers."


def _change_clause(metric: Metric, label: str, d: Delta, base: Stat, other: Stat) -> str:
    """A change beyond noise as a clause: ``lowers the final dev accuracy by 1.2 points (0.842 vs 0.854)``."""
    verb = "raises" if d.value > 0 else "lowers"
    size = {"score": f"{abs(d.value):.1f} points", "overlap": f"{abs(d.value):.3f}"}.get(metric.kind,
                                                                                          f"{abs(d.value):.0f}%")
    return f"{verb} {label} by {size} ({fmt(other, metric.unit)} vs {fmt(base, metric.unit)})"


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
