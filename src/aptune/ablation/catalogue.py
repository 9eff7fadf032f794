"""The catalogue of rows the ablation tables draw from: one ``Metric`` per ``run_metrics`` key.

Each row belongs to one of docs/design.md's metric groups; an ablation's table shows the groups its plan entry
``reports``, so what a table contains is decided by the plan and this list, not by the report code.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    return _training_rows() + _inference_rows(batch_sizes) + _size_and_pruning_rows()


def catalogue_batch(catalogue: list[Metric]) -> int:
    """The first timed batch size (the one the overview and trade-off plot use)."""
    return int(next(m.key for m in catalogue if m.key.startswith("lat_b"))[len("lat_b"):])


def _training_rows() -> list[Metric]:
    return [
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


def _inference_rows(batch_sizes: list[int]) -> list[Metric]:
    """Latency, p90 and throughput per batch size, then peak memory per batch size; readings quote the first."""
    rows = []
    for i, b in enumerate(batch_sizes):
        first = i == 0
        rows += [Metric(f"lat_b{b}", "inference_time", f"latency, batch {b} (median)", "cost", "latency", True,
                        f"batch-{b} inference latency" if first else ""),
                 Metric(f"p90_b{b}", "inference_time", f"latency, batch {b} (p90)", "cost", "latency", True),
                 Metric(f"thr_b{b}", "inference_time", f"throughput, batch {b}", "rate", "seq/s", True)]
    rows += [Metric(f"infmem_b{b}", "inference_memory", f"peak inference memory, batch {b}", "cost", "bytes", True,
                    f"batch-{b} peak inference memory" if i == 0 else "") for i, b in enumerate(batch_sizes)]
    return rows


def _size_and_pruning_rows() -> list[Metric]:
    return [
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
