"""Statistics over seeds and changes against ``apt``, with the rule that calls a change noise.

A single CPU run moves by a few percent in time and by about a binomial standard error in accuracy, so a
difference is only called a change when it clears both the seeds' spread and a floor per kind of metric. The
floors are stated in words in ``NOISE`` because the report prints them next to its tables.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from aptune.ablation.catalogue import Metric
from aptune.ablation.metrics import TTA_FRACTIONS
from aptune.ablation.results import find_runs

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

    @classmethod
    def missing(cls) -> "Stat":
        """Nothing measured: what a table shows for a variant or metric that has no value."""
        return cls(None, None, 0)


@dataclass
class Delta:
    """A change against apt: its size in the metric's delta unit, and whether it is within noise."""

    value: float | None  # points (score), percent (cost/rate/steps) or absolute (overlap)
    noise: bool
    threshold: float | None


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


def resolutions(config: dict, apt: dict[str, Stat]) -> dict[str, float]:
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


def variant_stats(results: list[dict], per_run: dict, variant: str, task: str) -> dict[str, Stat]:
    """Mean and spread over seeds of every ``run_metrics`` key of one variant on one task."""
    rows = [per_run[r["run_info"]["name"]] for r in find_runs(results, variant, task)]
    keys = {k for row in rows for k in row}
    return {k: Stat.of([row.get(k) for row in rows]) for k in keys}


@dataclass
class TaskComparison:
    """One task's statistics per variant and what the noise rule needs: the view tables and readings share."""

    task: str
    metric: str  # the task's primary dev metric
    n_dev: int | None
    by_variant: dict[str, dict[str, Stat]]
    resolution: dict[str, float]

    @property
    def has_apt(self) -> bool:
        return bool(self.by_variant.get("apt"))

    def stat(self, variant: str, key: str) -> Stat:
        return self.by_variant.get(variant, {}).get(key, Stat.missing())

    def against_apt(self, metric: Metric, variant: str) -> Delta:
        return delta(metric, self.stat("apt", metric.key), self.stat(variant, metric.key), self.n_dev,
                     self.resolution.get(metric.key))

    def seeds(self, variant: str) -> int:
        """The most seeds any metric of the variant has a value from."""
        return max((s.n for s in self.by_variant[variant].values()), default=0)
