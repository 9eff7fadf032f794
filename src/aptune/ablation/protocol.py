"""The protocol section of the ablation report: each metric as the design defines it, then as measured here.

Quoting the definition beside the measurement lets a reader check that a number means what the plan asked for
(docs/design.md, "Metric definitions") without opening the runner. What was measured depends on the
runner that wrote the results (older result files lack the model-byte memory and the side-by-side timing), so
the measurement text for memory and inference follows ``Sources`` and says which measurement the tables show.
"""

from __future__ import annotations

from aptune.ablation.results import Sources
from aptune.ablation.stats import COSTS_MORE, HELPS, HURTS, NO_EFFECT, ONE_SEED, SAVES

# (metric group, the design's definition, how this report measured it) for the metrics measured the same way
# by every runner; training memory, inference and statistics follow below, as their text depends on the results.
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
    ("pruning accuracy",
     "the dev metric right after the model reaches the target density, before any recovery training, and the "
     "overlap (Jaccard) of the kept blocks with those `apt` keeps.",
     "The dev set is evaluated right after the last pruning step's cut. Jaccard = |A∩B| / |A∪B| of the kept "
     "blocks, identified by (kind, site, original index), against `apt` on the same task and seed; per kind "
     "(attention heads, FFN neurons, hidden dimensions) and combined, which counts every block once and is "
     "therefore dominated by FFN neurons. Both are shown for every run that prunes (the overview, and the table "
     "of every pruned ablation whatever its plan `reports` lists); n/a for runs that do not prune."),
]


TRAINING_MEMORY = (
    "the largest amount, over any training step, of memory held by parameters, gradients, optimizer state and the "
    "activations kept for the backward pass. This is a deterministic property of model and recipe; it is reported "
    "together with the peak RSS of the run's own process, and with CUDA `max_memory_allocated` on a GPU.")
INFERENCE = (
    "all exported, merged models of a plan are timed in one process, alternating between them and repeating each "
    "measurement; latency is the median (and the p90) after warm-up, throughput is taken at batch 32 and 128 with "
    "sequences of 128 tokens. Inference memory is the bytes of the weights plus the peak bytes of activations in a "
    "forward pass (RSS shown alongside). Parameter count and size on disk complete it.")
STATISTICS = (
    "three seeds or more. A cell shows the mean over seeds with its 95% t-interval; each ablation is compared with "
    "`apt` seed by seed (paired difference, with its interval), and a verdict is given only where that interval "
    "backs it.")

_RSS = ("the peak RSS (`ru_maxrss`) of the run's own `python -m aptune train` process: interpreter, libraries, "
        "data, model, optimizer state and teacher together")


def _training_memory_here(sources: Sources) -> str:
    if sources.train_memory:
        return (f"*Peak training memory (RSS)* = {_RSS}; it depends on the allocator, which each run records in its "
                "provenance. Shown beside it, *training memory (model bytes)* = the bytes of parameters, gradients, "
                "optimizer state and activations saved for backward at the training step where their sum peaks "
                "(`train_info.memory`); machine-independent.")
    return (f"These results carry no model-byte measure (`train_info.memory`), so the only number is {_RSS}. "
            "CUDA `max_memory_allocated` is not recorded either, so GPU runs also show peak RSS.")


def _timing_here(sources: Sources, settings: dict) -> str:
    if sources.side_by_side:
        command = (f" ({sources.side_by_side_command}; `RUNS` = the runs folder)" if sources.side_by_side_command
                   else "")
        return ("Latency, p90 and throughput (rows marked *side by side*): every export of the plan reloaded in one "
                f"process and timed there, the exports interleaved{command}, so that a slow phase of the machine "
                "falls on all of them alike; median and p90 after warm-up, throughput = batch / median. A run "
                "missing from that timing shows n/a in these rows; its own-process timings stay in `runs.csv` "
                "(`lat_b*`, `p90_b*`, `thr_b*`).")
    return ("Latency, p90 and throughput (rows marked *own process*; these results carry no side-by-side timing): "
            "each export reloaded in a fresh process per batch size (`python -m aptune.ablation.inference`), "
            "float32, eval mode, `torch.inference_mode`, random token ids without padding; {warmup} untimed then "
            "{repeats} timed passes at sequence length {seq_len}, {threads} thread(s); median and p90; throughput "
            "= batch / median.").format(**settings)


def _inference_memory_here(sources: Sources) -> str:
    rss = ("the RSS-based peak of the timing process, weights + (`VmHWM` − `VmRSS` before the passes, with the "
           "high-water mark reset through `/proc/self/clear_refs`; on CUDA `max_memory_allocated` − weights)")
    if sources.model_memory:
        return ("*Inference memory (weights + peak activations)* = the bytes of the weights plus the peak bytes of "
                "activations in one forward pass at that batch size (`inference_info.model_memory`), a property of "
                f"the model; shown beside it, labelled RSS: {rss}. Size on disk = the whole export folder.")
    return (f"Inference memory: these results carry no weights + activations measure, so the rows show {rss}. "
            "Size on disk = the whole export folder (weights, config, tokenizer).")


def _statistics_here() -> str:
    return (
        "Each cell is the mean over seeds ± the half-width of its 95% t-interval, t(0.975, n−1)·sd/√n (one seed: "
        "the value alone, no ±). Each run is compared with `apt` on the same task and seed, using only seeds both "
        "have: the per-seed difference in points (×100) for dev metrics, absolute for Jaccard, and as a relative "
        "change (variant/apt − 1)·100 in % for times, memory, sizes, throughput and steps; the table shows the "
        "mean ± 95% t-interval of those differences and the number of pairs. Verdicts: for dev metrics, "
        f"throughput and Jaccard (higher is better) “{HELPS}” when the whole interval lies above 0 and “{HURTS}” "
        f"when it lies below; for time, memory, size and steps (lower is better) “{COSTS_MORE}” above 0 and "
        f"“{SAVES}” below; otherwise “{NO_EFFECT}”; with fewer than two pairs “{ONE_SEED}”. Times and memory are "
        "also given as a ratio of means to `full_finetune`, without an interval.")


def protocol_section(inference: dict, sources: Sources) -> list[str]:
    """``## Protocol``: the metric definitions with their measurement, then the statistics."""
    lines = ["## Protocol", "", "One protocol for every run. Each metric: the design's definition (quoted), then how "
             "it was measured here.", ""]
    settings = {"warmup": inference.get("warmup", "?"), "repeats": inference.get("repeats", "?"),
                "seq_len": inference.get("seq_len", "?"), "threads": inference.get("threads", "?")}
    performance, time, convergence, pruning = PROTOCOL
    measured = [performance, _with_runner_time_to_accuracy(time, sources), convergence,
                ("training memory", TRAINING_MEMORY, _training_memory_here(sources)),
                ("inference time and memory", INFERENCE,
                 _timing_here(sources, settings) + " " + _inference_memory_here(sources)),
                pruning, ("statistics", STATISTICS, _statistics_here())]
    for name, definition, here in measured:
        lines += [f"- **{name}**: “{definition}”", f"  Here: {here}"]
    return lines + [""]


def _with_runner_time_to_accuracy(entry: tuple[str, str, str], sources: Sources) -> tuple[str, str, str]:
    """The training-time entry, saying whose time-to-97% the tables show when the runner recorded it."""
    if not sources.runner_time_to_accuracy:
        return entry
    name, definition, here = entry
    return name, definition, here + (" Time and steps to 97% are the runner's where a result records them "
                                     "(`train_info.accuracy_target`, filled in after the plan against the same "
                                     "target); results without them get them computed here from the stored curve.")
