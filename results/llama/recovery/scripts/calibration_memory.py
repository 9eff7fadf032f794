# Historical record (was benchmarks/calibration_memory.py): run it at commit 78be17c, where it ran as it stands.
"""The calibration passes of a cut before tuning, frozen (``APT.calibrate``) against the same passes with
trainable adapters (as they ran before calibrate froze them), on a real model: are the salience scores the same to
the bit, and how many bytes does autograd keep for backward in each pass (issue 13: what sets the training peak of
a cut before tuning)?

    python benchmarks/calibration_memory.py --json results/llama/recovery/calibration_memory.json

SmolLM2-135M in float32 with rank-8 adapters on all seven linears (the default of configs/smollm2/alpaca.yaml),
2 batches of 4 x 256 random tokens, 1 thread.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from aptune import APT, APTModel
from aptune.bench.memory import SavedActivations
from aptune.config import APTConfig, PruneConfig
from aptune.distill.self_distill import DistillConfig
from aptune.model import AdapterConfig
from aptune.models import load_model
from aptune.provenance import meta_info

TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]


def method(base) -> APT:
    model = APTModel(copy.deepcopy(base), AdapterConfig(TARGETS, rank=8), seed=0)
    config = APTConfig(prune=PruneConfig(density=0.7, before_tuning=True, calibration_batches=2, start_step=1,
                                         num_steps=1, end_fraction=0.5), distill=DistillConfig(enabled=False))
    return APT(model, config, total_steps=8)


def random_batches(vocab: int, count: int = 2, batch: int = 4, length: int = 256) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (batch, length), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return batches


def trainable_passes(apt: APT, batches) -> list[int]:
    """The passes with every adapter asking for its gradient; bytes kept for backward per pass."""
    kept = []
    for batch in batches:
        saved = SavedActivations(apt.model)
        with saved.watch():
            apt.model(**batch).loss.backward()
        kept.append(saved.bytes)
        apt.scorer.update()
    apt.model.zero_grad(set_to_none=True)
    return kept


def frozen_passes(apt: APT, batches) -> list[int]:
    """``APT.calibrate``, one pass at a time; bytes kept for backward per pass."""
    kept, passes = [], apt.calibrate(batches, len(batches))
    for _ in batches:
        saved = SavedActivations(apt.model)
        with saved.watch():
            next(passes)
        kept.append(saved.bytes)
    passes.close()
    return kept


def same_scores(a: dict, b: dict) -> bool:
    blocks = all(torch.equal(a[kind][name], b[kind][name]) for kind in ("heads", "ffn") for name in a[kind])
    return blocks and torch.equal(a["hidden"], b["hidden"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = load_model("smollm2-135m", head="causal-lm", dtype=torch.float32)
    batches = random_batches(base.config.vocab_size)
    start = time.perf_counter()
    trainable, frozen = method(base), method(base)
    kept_trainable, kept_frozen = trainable_passes(trainable, batches), frozen_passes(frozen, batches)
    record = {
        "command": "python benchmarks/calibration_memory.py" + (f" --json {args.json}" if args.json else ""),
        "meta_info": meta_info(),
        "scores_bit_identical": same_scores(trainable.scorer.scores(), frozen.scorer.scores()),
        "saved_bytes_per_pass": {"trainable adapters": kept_trainable, "frozen (APT.calibrate)": kept_frozen},
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(record, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
