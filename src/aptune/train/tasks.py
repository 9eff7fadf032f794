"""What the training loop trains on: a GLUE task or the user's own table (sequence classification or
regression), or instruction data (causal LM): Alpaca, or the user's own records.

All come as a :class:`TrainTask`: tokenized ``train`` / ``eval`` examples, the head's output size, and an
``evaluate(model)`` returning the dev metrics with the one used for model selection (``primary_metric``,
``higher_is_better``). Instruction data is evaluated by the held-out loss on response tokens and its perplexity.
``data.train_file`` (:mod:`aptune.data.user_files`) wins over ``data.task``. :func:`set_label_names` names a
classifier's outputs after the task's classes, so an export's ``config.json`` says what each output means.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from aptune.config import RunConfig
from aptune.data import (
    InstructionFields,
    TableColumns,
    TaskData,
    collate,
    load_glue_task,
    load_instruction_data,
    load_user_classification,
    load_user_instruction_data,
    select_metrics,
)
from aptune.data.instruct import tokenize_instruction_splits
from aptune.data.resolve import DataSource
from aptune.data.user_files import read_instruction_table
from aptune.eval.classification import evaluate_task
from aptune.eval.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

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
    label_names: tuple[str, ...] = ()  # class names by id; empty for regression and instruction data

    def better(self, score: float, best: float | None) -> bool:
        return best is None or (score > best if self.higher_is_better else score < best)


def load_train_task(config: RunConfig, tokenizer) -> TrainTask:
    """The configured task: ``data.train_file`` when set, else ``model.head=causal-lm`` with ``data.task=alpaca``
    (or a JSON path), else GLUE."""
    d, seed = config.data, config.train.seed
    if config.model.head == "causal-lm" and d.metric is not None:
        raise ValueError(f"data.metric={d.metric!r} applies to classification and regression; instruction data "
                         "is always scored by its held-out loss (eval_loss) and perplexity")
    if d.train_file:
        return _user_file_task(config, tokenizer)
    if config.model.head == "causal-lm":
        path = d.task if d.task not in INSTRUCTION_TASKS else "alpaca"
        data = load_instruction_data(path, tokenizer, d.max_length, seed=seed, data_dir=d.data_dir,
                                     max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples,
                                     fields=instruction_fields(config))
        data = with_extra_training_records(data, config, tokenizer)
        return _instruction_task(str(d.task), data, config, tokenizer.pad_token_id)
    glue = load_glue_task(d.task, tokenizer, d.max_length, d.data_dir, d.max_train_samples, d.max_eval_samples,
                          seed=seed)
    return _classification_task(glue, config, tokenizer.pad_token_id)


def with_extra_training_records(data, config: RunConfig, tokenizer):
    """``data`` with ``data.extra_train_file``'s records added to its training split, tokenized the same way.

    The held-out records stay exactly the split's, so runs with and without the extra records are scored on
    the same examples; ``data.max_train_samples`` subsamples the data set's own records only."""
    if not config.data.extra_train_file:
        return data
    extra = _file_records(config.data.extra_train_file, "data.extra_train_file", config, tokenizer)
    return dataclasses.replace(data, train=data.train + extra.train,
                               train_records=data.train_records + extra.train_records)


def _file_records(path: str, setting: str, config: RunConfig, tokenizer):
    """A file of instruction records (any user-file format, the config's fields), tokenized whole as training
    examples with the config's length and the tokenizer's own prompt style; ``setting`` names it in errors."""
    records = read_instruction_table(path, setting, instruction_fields(config))
    return tokenize_instruction_splits(records, [], DataSource("file", str(Path(path))), tokenizer,
                                       config.data.max_length, config.train.seed)


def _classification_task(data: TaskData, config: RunConfig, pad_id: int) -> TrainTask:
    """A GLUE task or a user's table, scored by its metrics (``data.metric`` picks the primary one)."""
    metric_names = select_metrics(data.is_regression, data.num_labels, config.data.metric,
                                  _known_metrics(data.is_regression), defaults=data.metric_names)
    if metric_names != data.metric_names:  # data.metric chose another primary metric
        data = dataclasses.replace(data, metric_names=metric_names, primary_metric=metric_names[0])
    return TrainTask(data.name, data.train, data.eval, data.num_labels, data.primary_metric, True, data.source,
                     lambda model: evaluate_task(model, data, pad_id, batch_size=64),
                     label_names=() if data.is_regression else tuple(data.label_names))


def instruction_fields(config: RunConfig) -> InstructionFields:
    d = config.data
    return InstructionFields(d.instruction_field, d.input_field, d.output_field, d.messages_field)


def _known_metrics(is_regression: bool) -> tuple[str, ...]:
    return tuple(REGRESSION_METRICS if is_regression else CLASSIFICATION_METRICS)


def _instruction_task(name: str, data, config: RunConfig, pad_id: int) -> TrainTask:
    return TrainTask(name, data.train, data.eval, None, "eval_loss", False, data.source,
                     lambda model: heldout_loss(model, data.eval, pad_id, config.train.batch_size))


def _user_file_task(config: RunConfig, tokenizer) -> TrainTask:
    """``data.train_file`` (and ``data.eval_file``): instruction records for a causal LM, else a labelled table."""
    d, seed = config.data, config.train.seed
    samples = dict(seed=seed, max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples)
    if config.model.head == "causal-lm":
        data = load_user_instruction_data(d.train_file, d.eval_file, tokenizer, d.max_length,
                                          fields=instruction_fields(config), **samples)
        data = with_extra_training_records(data, config, tokenizer)
        return _instruction_task(Path(d.train_file).stem, data, config, tokenizer.pad_token_id)
    columns = TableColumns.from_settings(d.text_column, d.label_column, d.text_pair_column)
    data = load_user_classification(d.train_file, d.eval_file, tokenizer, d.max_length, columns, **samples)
    return _classification_task(data, config, tokenizer.pad_token_id)


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


def set_label_names(model: torch.nn.Module, label_names) -> None:
    """Name a classifier's outputs after the task's classes (``config.id2label`` / ``label2id``), so that the
    export says which output is which class; a no-op without names (regression, instruction data)."""
    if not label_names:
        return
    num_outputs = getattr(model.config, "num_labels", None)
    if num_outputs != len(label_names):
        raise ValueError(f"the model has {num_outputs} output(s) but the task has {len(label_names)} classes "
                         f"({', '.join(map(str, label_names))})")
    model.config.id2label = {index: str(name) for index, name in enumerate(label_names)}
    model.config.label2id = {str(name): index for index, name in enumerate(label_names)}
