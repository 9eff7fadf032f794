"""The catalogue of rows the ablation tables draw from: one ``Metric`` per ``run_metrics`` key.

Each row belongs to one of docs/design.md's metric groups; an ablation's table shows the groups its plan entry
``reports``, so what a table contains is decided by the plan and this list, not by the report code. Where the
results carry a newer measurement (side-by-side timing, model-byte memory), its rows take the headline place
and the older measurement stays beside it, labelled by what it is (RSS, own process).
"""

from __future__ import annotations

from dataclasses import dataclass

from aptune.ablation.results import Sources


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
        overview: a column of the "All runs" table.
    """

    key: str
    group: str
    label: str
    kind: str
    unit: str = ""
    vs_ft: bool = False
    phrase: str = ""
    overview: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.kind in ("score", "rate", "overlap")


def metric_catalogue(sources: Sources) -> list[Metric]:
    """The rows every table draws from, in order; inference rows per timed batch size."""
    return _training_rows(sources) + _inference_rows(sources) + _size_and_pruning_rows()


def overview_rows(catalogue: list[Metric]) -> list[Metric]:
    return [m for m in catalogue if m.overview]


def tradeoff_rows(catalogue: list[Metric]) -> tuple[Metric, Metric]:
    """The headline latency and inference-memory rows: the axes of the accuracy-vs-cost plot."""
    headline = overview_rows(catalogue)
    latency = next(m for m in headline if m.group == "inference_time")
    memory = next(m for m in headline if m.group == "inference_memory" and m.unit == "bytes")
    return latency, memory


def _training_rows(sources: Sources) -> list[Metric]:
    # the peak RSS is the headline: it is what a user's machine must hold; the counted tensors, when measured, beside
    return [
        Metric("final", "task_performance", "dev {metric}, final", "score", phrase="the final dev {metric}",
               overview=True),
        Metric("best_after_pruning", "task_performance", "dev {metric}, best after the last pruning step", "score",
               phrase="the best dev {metric} after pruning", overview=True),
        Metric("train_time_s", "training_time", "training wall time", "cost", "s", True, "training time",
               overview=True),
        Metric("tta97_s", "training_time", "time to 97% of full_finetune", "cost", "s", True,
               "the time to reach 97% of full fine-tuning", overview=True),
        Metric("steps97", "training_convergence", "steps to 97% of full_finetune", "steps", "steps",
               phrase="the steps to 97% of full fine-tuning", overview=True),
        Metric("train_peak_mem", "training_memory", "peak training memory (RSS of the training process)", "cost",
               "bytes", True, "peak training memory (RSS)", overview=True),
        *([Metric("train_mem", "training_memory",
                  "training memory (model bytes: params + grads + optimizer + saved activations)", "cost", "bytes",
                  True)] if sources.train_memory else []),
    ]


def _inference_rows(sources: Sources) -> list[Metric]:
    """Latency, p90 and throughput per batch size, then memory per batch size; readings quote the first batch.

    Timings come from the side-by-side run when the results have one (``sbs_`` keys), else from each run's
    own processes; the label says which, as the two are not comparable with each other.
    """
    prefix, where = ("sbs_", "side by side") if sources.side_by_side else ("", "own process")
    rows = []
    for i, b in enumerate(sources.batch_sizes):
        first = i == 0
        rows += [Metric(f"{prefix}lat_b{b}", "inference_time", f"latency, batch {b} (median, {where})", "cost",
                        "latency", True, f"batch-{b} inference latency" if first else "", overview=first),
                 Metric(f"{prefix}p90_b{b}", "inference_time", f"latency, batch {b} (p90, {where})", "cost",
                        "latency", True),
                 Metric(f"{prefix}thr_b{b}", "inference_time", f"throughput, batch {b} ({where})", "rate", "seq/s",
                        True)]
    for i, b in enumerate(sources.batch_sizes):
        rows += _inference_memory_rows(b, i == 0, sources.model_memory)
    return rows


def _inference_memory_rows(batch: int, first: bool, model_memory: bool) -> list[Metric]:
    """Inference memory at one batch size: weights + activations when measured (the headline), and the RSS."""
    rss = Metric(f"infmem_b{batch}", "inference_memory", f"peak inference memory, batch {batch} (RSS, own process)",
                 "cost", "bytes", True, f"batch-{batch} peak inference memory (RSS)" if first and not model_memory
                 else "", overview=first and not model_memory)
    if not model_memory:
        return [rss]
    model = Metric(f"modelmem_b{batch}", "inference_memory",
                   f"inference memory, batch {batch} (weights + peak activations)", "cost", "bytes", True,
                   f"batch-{batch} inference memory (weights + activations)" if first else "", overview=first)
    return [model, rss]


def _size_and_pruning_rows() -> list[Metric]:
    return [
        Metric("params", "inference_memory", "parameters (exported model)", "cost", "count", True,
               "the exported parameter count", overview=True),
        Metric("disk", "inference_memory", "size on disk", "cost", "bytes", True),
        Metric("pruning_acc", "pruning_accuracy", "dev {metric} at the target density, before recovery", "score",
               phrase="the dev {metric} at the target density before recovery", overview=True),
        Metric("jaccard_all", "pruning_accuracy", "Jaccard of kept blocks with apt, all", "overlap",
               phrase="the overlap of its kept blocks with apt's (Jaccard)", overview=True),
        Metric("jaccard_heads", "pruning_accuracy", "Jaccard with apt, attention heads", "overlap"),
        Metric("jaccard_ffn", "pruning_accuracy", "Jaccard with apt, FFN neurons", "overlap"),
        Metric("jaccard_hidden", "pruning_accuracy", "Jaccard with apt, hidden dimensions", "overlap"),
    ]
