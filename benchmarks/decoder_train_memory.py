"""What sets the training peak of a decoder run, counted (issue 13: "the pruned model's training peak memory below
lora's; say what sets it"): for each run config, the bytes of one dense calibration pass (a cut before tuning)
and of a training step after the cut and after rank growth, on the same worst-case batch.

    python benchmarks/decoder_train_memory.py --json results/llama/recovery/train_memory.json

Each variant is a config and overrides, as ``aptune train`` takes them (model.dtype=float32 for all), run in its
own process. The cut is the one ``aptune train`` makes: salience from the config's calibration batches of the
real training data (same loader and seed). The measured batch is ``train.batch_size`` x ``data.max_length``
random tokens, every position labelled but the last row's last one, which is padding. No training batch is
longer, and one with padding (the collator pads to a batch's longest record, so nearly every batch has some)
keeps about 4 MiB more per layer for backward than one without (the attention takes its masked path), so this
batch bounds every step of a run from above. Rank growth is moved to step 2 of 4 (one growth step to the full
budget, ``rank.budget_ratio``), so that the steps after it hold the largest adapters and their AdamW moments, as
the last steps of a run do.

Counted with ``aptune.bench.memory`` (parameters + gradients + AdamW moments + activations autograd saves for
backward); a calibration pass has no gradients or optimizer state (APT.calibrate freezes the adapters). The
process's peak RSS is reported beside it (it adds the interpreter, libraries and allocator slack, and the
throwaway dense model of the calibration count).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from aptune import APT
from aptune.bench.memory import SavedActivations, TrainingMemory, parameter_bytes
from aptune.config import load_config
from aptune.data.collate import make_dataloader
from aptune.models import load_tokenizer
from aptune.provenance import meta_info
from aptune.train.recipe import build_model
from aptune.train.tasks import load_train_task
from aptune.tuning.rank_allocator import tuning_params

QV, ALL = "configs/smollm2/alpaca_qv.yaml", "configs/smollm2/alpaca.yaml"
DENSE = ["prune.enabled=false", "rank.strategy=none"]
VARIANTS = {  # the runs of configs/smollm2/compare.yaml, and one candidate
    "lora": (QV, DENSE),
    "apt": (QV, []),
    "lora_recovery": (ALL, DENSE),
    "apt_recovery": (ALL, []),
    "apt_recovery_no_down": (ALL, ["adapter.targets=[q,k,v,o,gate,up]"]),
}
GROWTH_AT_STEP_2 = ["train.steps=4", "prune.start_step=1", "prune.num_steps=1", "prune.end_fraction=0.5",
                    "train.warmup_ratio=0"]
MIB = 2**20


def worst_case_batch(config, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (config.train.batch_size, config.data.max_length), generator=g)
    mask, labels = torch.ones_like(ids), ids.clone()
    mask[-1, -1], labels[-1, -1] = 0, -100  # one padding position: the masked attention path real batches take
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def calibration_pass_bytes(config, task, batch) -> int:
    """Weights + what autograd keeps for backward in one frozen calibration pass on the dense model."""
    apt = APT(build_model(config, task.num_labels, task.label_names), config.method, total_steps=config.train.steps,
              seed=config.train.seed)
    saved = SavedActivations(apt.model)
    passes = apt.calibrate([batch], 1)
    with saved.watch():
        next(passes)
    passes.close()
    return parameter_bytes(apt.model) + saved.bytes


def training_steps(config, task, tokenizer, batch) -> dict:
    """The cut of ``aptune train`` (if any), then ``train.steps`` steps on ``batch``; the peak step, counted."""
    torch.manual_seed(config.train.seed)
    apt = APT(build_model(config, task.num_labels, task.label_names), config.method, total_steps=config.train.steps,
              seed=config.train.seed)
    if config.prune.enabled and config.prune.before_tuning:
        loader = make_dataloader(task.train, config.train.batch_size, tokenizer.pad_token_id, shuffle=True,
                                 seed=config.train.seed + 1, group_by_length=True, drop_last=True)
        apt.prune_before_tuning(iter(loader))
    optimizer = torch.optim.AdamW(apt.trainable_parameters(), lr=config.train.lr)
    memory = TrainingMemory(apt.model)
    for step in range(1, config.train.steps + 1):
        with memory.watch() as saved:
            loss = apt.compute_loss(batch).loss
        loss.backward()
        apt.after_backward()
        optimizer.step()
        memory.record(step, saved, optimizer)
        optimizer.zero_grad(set_to_none=True)
        apt.after_optimizer_step(optimizer)
    return {"step": memory.peak.as_dict(), "params": apt.model.num_params(), "density": apt.density(),
            "tuning_params": tuning_params(apt.model)}


def measure(name: str, threads: int) -> dict:
    path, overrides = VARIANTS[name]
    overrides = [*overrides, "model.dtype=float32", *GROWTH_AT_STEP_2]
    torch.set_num_threads(threads)
    config = load_config(path, overrides)
    tokenizer = load_tokenizer(config.model.name)
    task = load_train_task(config, tokenizer)
    batch = worst_case_batch(config, len(tokenizer))
    started = time.perf_counter()
    row = {"variant": name, "config": path, "overrides": overrides, **training_steps(config, task, tokenizer, batch)}
    gc.collect()
    if config.prune.enabled and config.prune.before_tuning:
        row["calibration_pass_bytes"] = calibration_pass_bytes(config, task, batch)
    steps = row["step"]["total_bytes"]
    row["peak_bytes"] = max(steps, row.get("calibration_pass_bytes", 0))
    row["set_by"] = "training step" if steps >= row.get("calibration_pass_bytes", 0) else "calibration pass"
    row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| variant | calibration pass | step: params | grads | AdamW | activations | step total | peak | "
             "set by | peak RSS |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        s = r["step"]
        calib = f"{r['calibration_pass_bytes'] / MIB:,.0f}" if "calibration_pass_bytes" in r else "–"
        cells = [s[k] / MIB for k in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes",
                                      "total_bytes")]
        lines.append(f"| {r['variant']} | {calib} | " + " | ".join(f"{c:,.0f}" for c in cells)
                     + f" | **{r['peak_bytes'] / MIB:,.0f}** | {r['set_by']} | {r['peak_rss_bytes'] / 2**30:.2f} GiB |")
    return "\n".join(lines) + "\n\n(MiB, counted; peak RSS in GiB)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one variant in this process
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.threads)))
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    rows = []
    for name in names:  # one process each, so that each peak RSS is its own
        out = subprocess.run([sys.executable, __file__, "--one", name, "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{name}: peak {rows[-1]['peak_bytes'] / MIB:,.0f} MiB ({rows[-1]['set_by']})", flush=True)
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": "python benchmarks/decoder_train_memory.py " + " ".join(argv),
                                         "rows": rows, "table": table(rows), "provenance": meta_info()}, indent=1))


if __name__ == "__main__":
    main()
