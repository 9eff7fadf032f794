"""Statistics over seeds: every cell a mean with its 95% t-interval, every change against ``apt`` a paired
difference by seed with its own interval, and a verdict in words only where that interval backs one.

Pairing by seed removes what two runs on the same seed share (data order, initialisation, the machine's load
at the time), so a paired interval is narrower than comparing two means and is the honest test of "did this
change do anything". With one seed there is no spread to build an interval from, and then no verdict is given
at all rather than one from a rule of thumb.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats

from aptune.ablation.catalogue import Metric
from aptune.ablation.results import find_runs

CONFIDENCE = 0.95

# The verdict words (the report quotes them; readings and tests compare against these constants).
HELPS, HURTS = "helps", "hurts"  # higher is better: scores, throughput, overlap
COSTS_MORE, SAVES = "costs more", "saves"  # lower is better: time, memory, steps, size
NO_EFFECT = "no effect detectable at this budget"
ONE_SEED = "one seed: no interval, no verdict"
NO_PAIRS = "no seed with a value for both: not compared"


def t_half_width(values: list[float]) -> float | None:
    """Half-width of the t-interval of the mean of ``values`` (None below two values: no spread to use)."""
    n = len(values)
    if n < 2:
        return None
    quantile = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)
    return float(quantile * statistics.stdev(values) / math.sqrt(n))


@dataclass
class Stat:
    """Mean over seeds with the half-width of its 95% t-interval."""

    mean: float | None
    half_width: float | None  # None with fewer than two seeds
    n: int  # seeds with a value
    total: int = 0  # seeds run (a time-to-accuracy may be missing because the target was never reached)

    @classmethod
    def of(cls, values: list[float | None]) -> "Stat":
        total = len(values)
        values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not values:
            return cls(None, None, 0, total)
        return cls(statistics.fmean(values), t_half_width(values), len(values), total)

    @classmethod
    def missing(cls) -> "Stat":
        """Nothing measured: what a table shows for a variant or metric that has no value."""
        return cls(None, None, 0)

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half_width is None else self.mean + self.half_width

    def as_percent(self, missing: str = "n/a") -> str:
        """A share as "90.2% ± 1.6" (percentage points), without the interval when there is none."""
        if self.mean is None:
            return missing
        return f"{100 * self.mean:.1f}%" + (f" ± {100 * self.half_width:.1f}" if self.half_width is not None else "")


# ------------------------------------------------------------------------------------------ paired differences
@dataclass
class Paired:
    """A variant against apt, seed by seed: the mean per-seed change with its interval, and the verdict."""

    change: Stat  # over the per-seed changes; n = the number of pairs
    unit: str  # "pts" (scores), "%" (relative change of costs, rates, steps) or "" (absolute, Jaccard)
    verdict: str

    @property
    def pairs(self) -> int:
        return self.change.n

    @property
    def better(self) -> bool:
        return self.verdict in (HELPS, SAVES)

    @property
    def worse(self) -> bool:
        return self.verdict in (HURTS, COSTS_MORE)

    @property
    def effect(self) -> bool:
        """Whether the interval backs a change (either way)."""
        return self.better or self.worse


def change_unit(metric: Metric) -> str:
    return {"score": "pts", "overlap": ""}.get(metric.kind, "%")


def per_seed_change(metric: Metric, apt: float, other: float) -> float | None:
    """One seed's change: points for scores, absolute for overlap, else percent of apt's value."""
    if metric.kind == "score":
        return (other - apt) * 100
    if metric.kind == "overlap":
        return other - apt
    return None if apt == 0 else (other / apt - 1) * 100


def interval_side(change: Stat) -> int | None:
    """+1 or -1 when the whole 95% interval of ``change`` lies above or below 0, 0 when it holds 0, None when
    there is no interval (fewer than two values): the one rule every verdict in words follows."""
    if change.half_width is None:
        return None
    if change.low > 0:
        return 1
    if change.high < 0:
        return -1
    return 0


def verdict(metric: Metric, change: Stat) -> str:
    """The words the interval of ``change`` backs: an effect only when the whole interval lies on one side of 0."""
    if change.n == 0:
        return NO_PAIRS
    side = interval_side(change)
    if side is None:
        return ONE_SEED
    if side > 0:
        return HELPS if metric.higher_is_better else COSTS_MORE
    if side < 0:
        return HURTS if metric.higher_is_better else SAVES
    return NO_EFFECT


def paired_difference(metric: Metric, apt: dict[int, float | None], other: dict[int, float | None]) -> Paired:
    """``other`` minus ``apt`` on the seeds both have a value for (values keyed by seed)."""
    changes = []
    for seed in sorted(set(apt) & set(other)):
        if _usable(apt[seed]) and _usable(other[seed]):
            change = per_seed_change(metric, apt[seed], other[seed])
            if change is not None:
                changes.append(change)
    change = Stat.of(changes)
    return Paired(change, change_unit(metric), verdict(metric, change))


def _usable(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------------------ one task
def variant_values(results: list[dict], per_run: dict, variant: str, task: str) -> dict[str, dict[int, float | None]]:
    """Every ``run_metrics`` key of one variant on one task, seed by seed (kept per seed for the pairing)."""
    runs = find_runs(results, variant, task)
    keys = {k for r in runs for k in per_run[r["run_info"]["name"]]}
    return {k: {r["run_info"]["seed"]: per_run[r["run_info"]["name"]].get(k) for r in runs} for k in keys}


@dataclass
class TaskComparison:
    """One task's per-seed values of every variant: the view tables, readings and plots share."""

    task: str
    metric: str  # the task's primary dev metric
    n_dev: int | None
    by_variant: dict[str, dict[str, dict[int, float | None]]]  # variant -> key -> seed -> value

    @property
    def variants(self) -> list[str]:
        return list(self.by_variant)

    @property
    def has_apt(self) -> bool:
        return bool(self.by_variant.get("apt"))

    def values(self, variant: str, key: str) -> dict[int, float | None]:
        return self.by_variant.get(variant, {}).get(key, {})

    def stat(self, variant: str, key: str) -> Stat:
        values = self.values(variant, key)
        return Stat.of(list(values.values())) if values else Stat.missing()

    def against_apt(self, metric: Metric, variant: str) -> Paired:
        return paired_difference(metric, self.values("apt", metric.key), self.values(variant, metric.key))

    def seeds(self, variant: str) -> int:
        """The number of seeds the variant ran on this task."""
        return max((len(v) for v in self.by_variant.get(variant, {}).values()), default=0)
