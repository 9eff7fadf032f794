"""The protocol section of the ablation report: each metric as the design defines it, then as measured here.

Quoting the definition beside the measurement lets a reader check that a number means what the plan asked for
(docs/design.md, "Metric definitions") without opening the runner; the measurement text takes the run's
inference settings.
"""

from __future__ import annotations

from aptune.ablation.stats import NOISE

# (metric group, the design's definition, how this report measured it; {warmup} etc. come from inference_info)
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
    ("training memory",
     "peak memory of the run (CUDA `max_memory_allocated` on a GPU; peak RSS of the run's own process on a "
     "CPU, so each run gets its own process).",
     "Each run trains in its own `python -m aptune train` process; the number is that process's peak RSS "
     "(`ru_maxrss`): interpreter, libraries, data, model, optimizer state and teacher together. The training "
     "loop does not record CUDA `max_memory_allocated` yet, so GPU runs also show peak RSS."),
    ("inference time and memory",
     "the exported, merged model; latency (median of repeated timed forward passes after warm-up) and "
     "throughput at batch 32 and 128, sequence length 128; peak memory during inference; parameter count and "
     "size on disk.",
     "The export is reloaded in a fresh process per batch size (`python -m aptune.ablation.inference`), "
     "float32, eval mode, "
     "`torch.inference_mode`, random token ids without padding; per batch size {warmup} untimed then "
     "{repeats} timed passes at sequence length {seq_len}, {threads} thread(s); p90 is reported too; "
     "throughput = batch / median. Peak inference memory = weight bytes + peak activation memory, where on "
     "CPU the activation peak is `VmHWM` − `VmRSS` before the passes, with the high-water mark reset through "
     "`/proc/self/clear_refs` (on CUDA: `max_memory_allocated` − weights). Size on disk = the whole export "
     "folder (weights, config, tokenizer)."),
    ("pruning accuracy",
     "the dev metric right after the model reaches the target density, before any recovery training, and the "
     "overlap (Jaccard) of the kept blocks with those `apt` keeps.",
     "The dev set is evaluated right after the last pruning step's cut. Jaccard = |A∩B| / |A∪B| of the kept "
     "blocks, identified by (kind, site, original index), against `apt` on the same task and seed; per kind "
     "(attention heads, FFN neurons, hidden dimensions) and combined, which counts every block once and is "
     "therefore dominated by FFN neurons."),
]


def protocol_section(inference: dict) -> list[str]:
    """``## Protocol``: the metric definitions with their measurement, then how changes and noise are read."""
    lines = ["## Protocol", "", "One protocol for every run. Each metric: the design's definition (quoted), then how "
             "it was measured here.", ""]
    settings = {"warmup": inference.get("warmup", "?"), "repeats": inference.get("repeats", "?"),
                "seq_len": inference.get("seq_len", "?"), "threads": inference.get("threads", "?")}
    for name, definition, here in PROTOCOL:
        lines += [f"- **{name}**: “{definition}”", f"  Here: {here.format(**settings)}"]
    return lines + [
        "",
        "Changes are against `apt` (same task, mean over seeds): points for dev metrics, percent for times, "
        "memory, sizes and steps, absolute for Jaccard; times and memory also as a ratio to `full_finetune`. "
        "Values are mean ± standard deviation over seeds (no ± with one seed). A change is marked *(noise)* "
        "when its size is below the larger of the seeds' standard deviation and a floor: "
        + "; ".join(f"{kind}: {text}" for kind, text in NOISE.items()) + ".",
        "",
    ]
