"""Dev-set evaluation of a sequence-classification (or regression) model on a tokenized task.

API::

    task = load_glue_task("mrpc", tokenizer, include_train=False)
    metrics = evaluate_task(model, task, batch_size=64)   # {"f1": ..., "accuracy": ...}

Batches are sorted by length (less padding) and the outputs put back in dataset order, so
``predict_task`` returns logits aligned with ``task.eval``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aptune.data.collate import LengthGroupedBatchSampler, collate
from aptune.data.glue import TaskData
from aptune.eval.metrics import compute_metrics


def predict_task(
    model, examples: list[dict[str, Any]], pad_token_id: int, batch_size: int = 64, progress: bool = False,
    description: str = "evaluating",
) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs (logits, or scores for regression) and labels for tokenized examples, in order."""
    device = next(model.parameters()).device
    sampler = LengthGroupedBatchSampler([len(example["input_ids"]) for example in examples], batch_size, shuffle=False)
    outputs: list[np.ndarray | None] = [None] * len(examples)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(examples), desc=description, disable=not progress) as bar:
            for indices in sampler:
                batch = collate([examples[i] for i in indices], pad_token_id)
                batch.pop("labels", None)
                logits = model(**{key: value.to(device) for key, value in batch.items()}).logits
                for index, row in zip(indices, logits.float().cpu().numpy()):
                    outputs[index] = row
                bar.update(len(indices))
    finally:
        model.train(was_training)
    labels = np.asarray([example["labels"] for example in examples])
    return np.stack(outputs), labels


def evaluate_task(
    model, task: TaskData, pad_token_id: int = 0, batch_size: int = 64, progress: bool = False
) -> dict[str, float]:
    """The task's metrics (``task.metric_names``) of ``model`` on ``task.eval``, plus ``n``."""
    if not task.eval:
        raise ValueError(f"task {task.name} has no evaluation examples")
    num_outputs = getattr(model.config, "num_labels", task.num_labels)
    if num_outputs != task.num_labels:
        raise ValueError(
            f"the model has {num_outputs} output(s) but task {task.name} needs {task.num_labels}; "
            "was it fine-tuned on this task?"
        )
    logits, labels = predict_task(model, task.eval, pad_token_id, batch_size, progress, description=task.name)
    metrics = compute_metrics(task.metric_names, logits, labels, is_regression=task.is_regression)
    metrics["n"] = len(task.eval)
    return metrics
