"""What the training loop trains on: a GLUE task (sequence classification) or instruction data (causal LM).

Both come as a :class:`TrainTask`: tokenized ``train`` / ``eval`` examples, the head's output size, and an
``evaluate(model)`` returning the dev metrics with the one used for model selection (``primary_metric``,
``higher_is_better``). Instruction data is evaluated by the held-out loss on response tokens and its perplexity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from aptune.config import RunConfig
from aptune.data import collate, load_glue_task, load_instruction_data
from aptune.eval.classification import evaluate_task

INSTRUCTION_TASKS = ("alpaca",)


@dataclass
class TrainTask:
    name: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    num_labels: int | None
    primary_metric: str
    higher_is_better: bool
    source: Any
    evaluate: Callable[[torch.nn.Module], dict[str, float]]

    def better(self, score: float, best: float | None) -> bool:
        return best is None or (score > best if self.higher_is_better else score < best)


def load_train_task(config: RunConfig, tokenizer) -> TrainTask:
    """The configured task: ``model.head=causal-lm`` with ``data.task=alpaca`` (or a JSON path), else GLUE."""
    d, seed = config.data, config.train.seed
    pad_id = tokenizer.pad_token_id
    if config.model.head == "causal-lm":
        path = d.task if d.task not in INSTRUCTION_TASKS else "alpaca"
        data = load_instruction_data(path, tokenizer, d.max_length, seed=seed, data_dir=d.data_dir,
                                     max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples)
        return TrainTask(str(d.task), data.train, data.eval, None, "eval_loss", False, data.source,
                         lambda model: heldout_loss(model, data.eval, pad_id, config.train.batch_size))
    glue = load_glue_task(d.task, tokenizer, d.max_length, d.data_dir, d.max_train_samples, d.max_eval_samples,
                          seed=seed)
    return TrainTask(glue.name, glue.train, glue.eval, glue.num_labels, glue.primary_metric, True, glue.source,
                     lambda model: evaluate_task(model, glue, pad_id, batch_size=64))


@torch.inference_mode()
def heldout_loss(model, examples: list[dict[str, Any]], pad_token_id: int, batch_size: int = 8) -> dict[str, float]:
    """Mean cross-entropy per response token on held-out instruction examples, and its perplexity."""
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_token_id)
        labels = batch.pop("labels").to(device)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        shifted = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100,
            reduction="sum")
        total += float(loss)
        tokens += int((shifted != -100).sum())
    mean = total / max(1, tokens)
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "n": len(examples)}
