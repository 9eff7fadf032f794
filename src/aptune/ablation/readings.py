"""The generated paragraph under each ablation heading: what the variant changes against ``apt``, in words.

A reading quotes only the headline numbers (the catalogue rows with a ``phrase``) and sorts them by the verdict
of their paired interval: effects the interval backs (quoted with the interval), no effect detectable, and
numbers that cannot be compared. With one seed nothing is called an effect; the differences are listed as
measured, so that a reader sees them without mistaking a single run for a finding.
"""

from __future__ import annotations

from aptune.ablation.catalogue import Metric
from aptune.ablation.stats import COSTS_MORE, NO_EFFECT, ONE_SEED, Paired, TaskComparison
from aptune.ablation.tables import fmt, interval_text, signed_change


def reading(comparison: TaskComparison, members: list[str], rows: list[Metric], infos: dict[str, dict]) -> str:
    """One paragraph per member of an ablation, from the rows of its table."""
    if not comparison.has_apt:
        return "_No finished `apt` run on this task: nothing to compare with._"
    return "\n\n".join(_member_reading(comparison, v, rows, infos[v].get("what")) for v in members)


def _member_reading(comparison: TaskComparison, variant: str, rows: list[Metric], what: str | None) -> str:
    effects, no_effect, single, missing = [], [], [], []
    better = worse = 0
    for m in rows:
        stat, base = comparison.stat(variant, m.key), comparison.stat("apt", m.key)
        if not m.phrase or (stat.mean is None and base.mean is None):
            continue
        phrase = m.phrase.format(metric=comparison.metric)
        paired = comparison.against_apt(m, variant)
        values = f"{fmt(stat, m.unit)} vs {fmt(base, m.unit)}"
        if paired.effect:
            effects.append(f"{_verb(paired.verdict)} {phrase} ({interval_text(paired)}; {values})")
            better, worse = better + paired.better, worse + paired.worse
        elif paired.verdict == NO_EFFECT:
            no_effect.append(f"{phrase} ({interval_text(paired)})")
        elif paired.verdict == ONE_SEED:
            single.append(f"{phrase} {_plain_change(paired)} ({values})")
        else:
            missing.append(f"{phrase} ({values})")
    subject = f"`{variant}` ({what})" if what else f"`{variant}`"
    text = f"On {comparison.task} over {_seeds(comparison, variant)}, against `apt`, {subject} "
    if effects:
        text += _join(effects) + "."
    elif no_effect or not single:
        text += "shows no effect its intervals back."
    else:
        text += "cannot be judged: one seed gives no interval, so no difference is called an effect."
    if no_effect:
        text += f" No effect detectable at this budget: {_join(no_effect)}."
    if single:
        text += f" One seed, no interval, no verdict: {_join(single)}."
    if missing:
        text += f" Not comparable (not measured or never reached): {_join(missing)}."
    if not effects and not no_effect:
        return text  # no interval anywhere: a tally of better and worse would be a verdict by the back door
    total = len(effects) + len(no_effect) + len(single) + len(missing)
    return text + f" Net: backed by its interval, better on {better} and worse on {worse} of {total} headline numbers."


def _verb(verdict: str) -> str:
    """The verdict as the verb of a clause: "hurts the final dev accuracy", "costs more in training time"."""
    return f"{verdict} in" if verdict == COSTS_MORE else verdict


def _plain_change(paired: Paired) -> str:
    """A difference from one pair, without an interval: ``differs by −1.8 pts``."""
    return "differs by " + signed_change(paired)


def _seeds(comparison: TaskComparison, variant: str) -> str:
    seeds = comparison.seeds(variant)
    return f"{seeds} seed{'s' if seeds != 1 else ''}"


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
