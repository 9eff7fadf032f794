"""GLUE tasks: reading and tokenizing SST-2, CoLA, MRPC, RTE, STS-B, QNLI, MNLI and QQP (scoring: aptune.eval).

API for the trainer::

    task = load_glue_task("sst2", tokenizer, max_length=128, max_train_samples=2000, seed=0)
    task.train, task.eval          # lists of {"input_ids", "attention_mask", ["token_type_ids"], "labels"}
    task.num_labels                # 1 for STS-B (regression)
    task.is_regression, task.metric_names, task.primary_metric
    evaluate_task(model, task)     # aptune.eval.classification: the task's metric_names on task.eval
    task.source.describe()         # where the files came from

Data is read from local GLUE-format folders (the layout of the official ``download_glue_data.py``:
``<root>/SST-2/train.tsv``, ``dev.tsv``, ...) found as described in :mod:`aptune.data.resolve`, with
the hub (``nyu-mll/glue``) as fallback. The evaluation split is GLUE's dev set (test labels are
hidden). A data folder the caller names must hold ``dev.tsv``, and ``train.tsv`` too when training.
Without one, when the place found has ``dev.tsv`` but no ``train.tsv`` (QNLI in the shared data), a
seeded split of dev provides both: ``dev_split_eval_fraction`` of it (default 20%) for evaluation, the
rest for training; ``TaskData.notes`` and the source's description (``str(task.source)``) say so.

Label ids follow the hub's GLUE convention (e.g. RTE/QNLI: 0 = entailment, 1 = not_entailment; MNLI:
entailment, neutral, contradiction), so local and hub data give the same ids.

Subsampling (``max_train_samples`` / ``max_eval_samples``) draws a seeded random subset and keeps it
in file order, so quick profiles see both classes and the same seed gives the same subset.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aptune.data.files import DataFormatError, read_tsv
from aptune.data.resolve import DataSource, load_hub_dataset, resolve_data
from aptune.data.splits import split_examples, subsample

logger = logging.getLogger("aptune.data")


@dataclass(frozen=True)
class GlueTaskSpec:
    """How one GLUE task is stored and scored.

    Attributes:
        name: canonical short name (``"sst2"``).
        folder: folder name in the GLUE layout (``"SST-2"``).
        text_columns: one or two text columns of the local TSV.
        label_column: label column of the local TSV.
        label_values: the label strings of the local TSV in id order; empty for regression.
        metric_names: metrics reported, the primary one first.
        hub_config: config name in ``nyu-mll/glue``.
        hub_text_columns: text columns in the hub data.
        train_file / eval_file: file names in the task folder.
        hub_eval_split: hub split used for evaluation.
        fieldnames: column names of a header-less TSV (CoLA); ``None`` when the file has a header.
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    label_values: tuple[str, ...]
    metric_names: tuple[str, ...]
    hub_config: str
    hub_text_columns: tuple[str, ...]
    train_file: str = "train.tsv"
    eval_file: str = "dev.tsv"
    hub_eval_split: str = "validation"
    fieldnames: tuple[str, ...] | None = None
    label_names: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return not self.label_values

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_values)

    @property
    def primary_metric(self) -> str:
        return self.metric_names[0]


_NLI3 = ("entailment", "neutral", "contradiction")
GLUE_TASKS: dict[str, GlueTaskSpec] = {
    spec.name: spec
    for spec in (
        GlueTaskSpec("sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",), "sst2", ("sentence",),
                     label_names=("negative", "positive")),
        GlueTaskSpec("cola", "CoLA", ("sentence",), "label", ("0", "1"), ("mcc",), "cola", ("sentence",),
                     fieldnames=("source", "label", "original_mark", "sentence"),
                     label_names=("unacceptable", "acceptable")),
        GlueTaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy"), "mrpc",
                     ("sentence1", "sentence2"), label_names=("not_equivalent", "equivalent")),
        GlueTaskSpec("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                     ("accuracy",), "rte", ("sentence1", "sentence2")),
        GlueTaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), "score", (), ("pearson", "spearman"), "stsb",
                     ("sentence1", "sentence2")),
        GlueTaskSpec("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                     ("accuracy",), "qnli", ("question", "sentence")),
        GlueTaskSpec("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", _NLI3, ("accuracy",), "mnli",
                     ("premise", "hypothesis"), eval_file="dev_matched.tsv", hub_eval_split="validation_matched"),
        GlueTaskSpec("mnli-mm", "MNLI", ("sentence1", "sentence2"), "gold_label", _NLI3, ("accuracy",), "mnli",
                     ("premise", "hypothesis"), eval_file="dev_mismatched.tsv",
                     hub_eval_split="validation_mismatched"),
        GlueTaskSpec("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("f1", "accuracy"), "qqp",
                     ("question1", "question2"), label_names=("not_duplicate", "duplicate")),
    )
}


def glue_task_spec(name: str) -> GlueTaskSpec:
    """Look up a task by any usual spelling: ``sst2``, ``SST-2``, ``sts-b``, ``STSB``, ``mnli_mm``..."""
    key = name.lower().replace("_", "-")
    key = {"mnli-m": "mnli", "mnli-matched": "mnli", "mnli-mismatched": "mnli-mm"}.get(key, key)
    if key not in GLUE_TASKS:
        key = key.replace("-", "")
        key = {"mnlimm": "mnli-mm"}.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; choose one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


@dataclass(frozen=True)
class GlueExample:
    """One labelled text (pair) before tokenization; ``origin`` is ``file:line`` or ``hub:split[index]``."""

    text_a: str
    text_b: str | None
    label: int | float
    origin: str


def _parse_label(spec: GlueTaskSpec, raw: str, path: Path, line: int) -> int | float:
    if spec.is_regression:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataFormatError(path, line, f"score {raw!r} in column {spec.label_column!r} is not a number")
        return value
    try:
        return spec.label_values.index(raw)
    except ValueError:
        allowed = ", ".join(repr(value) for value in spec.label_values)
        raise DataFormatError(
            path, line, f"label {raw!r} in column {spec.label_column!r} is not one of {allowed}"
        ) from None


def read_glue_file(spec: GlueTaskSpec, path: str | Path) -> list[GlueExample]:
    """Read a labelled GLUE TSV (train or dev) into examples, validating every row.

    Raises:
        DataFormatError: a missing column, a row with the wrong number of fields, or a bad label;
            the message names the file and the line.
    """
    path = Path(path)
    rows = read_tsv(path, (*spec.text_columns, spec.label_column), fieldnames=spec.fieldnames)
    examples = []
    for row in rows:
        label = _parse_label(spec, row.fields[spec.label_column], path, row.line)
        texts = [row.fields[column] for column in spec.text_columns]
        examples.append(GlueExample(texts[0], texts[1] if len(texts) > 1 else None, label, f"{path}:{row.line}"))
    if not examples:
        raise DataFormatError(path, None, "the file has no data rows")
    return examples


def _hub_examples(spec: GlueTaskSpec, dataset, split: str) -> list[GlueExample]:
    examples = []
    for index, record in enumerate(dataset):
        texts = [record[column] for column in spec.hub_text_columns]
        label = float(record["label"]) if spec.is_regression else int(record["label"])
        examples.append(GlueExample(texts[0], texts[1] if len(texts) > 1 else None, label, f"hub:{split}[{index}]"))
    return examples


@dataclass
class GlueSplits:
    """Raw (untokenized) train and eval examples of a task and where they came from."""

    spec: GlueTaskSpec
    train: list[GlueExample]
    eval: list[GlueExample]
    source: DataSource
    notes: list[str] = field(default_factory=list)


def load_glue_examples(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    dev_split_eval_fraction: float = 0.2,
    include_train: bool = True,
) -> GlueSplits:
    """Read a task's labelled train and eval examples (no tokenization).

    Args:
        name: task name (see :func:`glue_task_spec`).
        data_dir: explicit data folder, the only place read when given: it must hold the dev file, and the
            train file when ``include_train``.
        seed: seed of the dev split used when no folder is given and the place found has no train file.
        dev_split_eval_fraction: share of dev kept for evaluation in that case.
        include_train: ``False`` reads only the eval split (faster for evaluation of a trained model).

    Raises:
        DataNotFoundError: the given folder lacks a needed file (named), or no place has the task (every place
            tried is listed).
        DataFormatError: a file is malformed.
    """
    spec = glue_task_spec(name)
    eval_file, train_file = f"{spec.folder}/{spec.eval_file}", f"{spec.folder}/{spec.train_file}"
    if data_dir:  # the user's folder: it must hold every split needed, no dev split stands in for train
        files, optional = [eval_file, train_file] if include_train else [eval_file], []
    else:
        files, optional = [eval_file], [train_file]
    hub_id = f"nyu-mll/glue:{spec.hub_config}"

    def from_hub():
        splits = {"eval": load_hub_dataset("nyu-mll/glue", spec.hub_config, split=spec.hub_eval_split)}
        if include_train:
            splits["train"] = load_hub_dataset("nyu-mll/glue", spec.hub_config, split="train")
        return splits

    resolved = resolve_data(
        f"GLUE {spec.folder}", files, data_dir=data_dir, hub_loader=from_hub, hub_id=hub_id, optional_files=optional
    )
    notes: list[str] = []
    if resolved.hub_data is not None:
        eval_examples = _hub_examples(spec, resolved.hub_data["eval"], spec.hub_eval_split)
        train_examples = _hub_examples(spec, resolved.hub_data["train"], "train") if include_train else []
        return GlueSplits(spec, train_examples, eval_examples, resolved.source, notes)

    eval_path, train_path = resolved.paths[0], (resolved.paths[1:] or [None])[0]
    eval_examples = read_glue_file(spec, eval_path)
    if train_path is None:  # a given folder, evaluation only: the whole dev set
        return GlueSplits(spec, [], eval_examples, resolved.source, notes)
    if train_path.is_file():
        train_examples = read_glue_file(spec, train_path) if include_train else []
        return GlueSplits(spec, train_examples, eval_examples, resolved.source, notes)
    # No train split where the data was found (QNLI in the shared data): carve train and eval out of dev.
    train_examples, eval_examples = split_examples(eval_examples, dev_split_eval_fraction, seed)
    note = (
        f"{train_path} not found: split {eval_path.name} ({len(train_examples) + len(eval_examples)} rows) "
        f"with seed {seed} into {len(train_examples)} train / {len(eval_examples)} eval"
    )
    notes.append(note)
    logger.info("GLUE %s: %s", spec.folder, note)
    source = dataclasses.replace(resolved.source, note=note)  # printed wherever the source is (train, eval)
    return GlueSplits(spec, train_examples if include_train else [], eval_examples, source, notes)


def tokenize_pairs(
    examples: Sequence[GlueExample], tokenizer, max_length: int, chunk_size: int = 1024
) -> list[dict[str, Any]]:
    """Tokenize examples (truncating to ``max_length``) into dicts with ``labels``; no padding here."""
    features: list[dict[str, Any]] = []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        first = [example.text_a for example in chunk]
        second = [example.text_b for example in chunk] if chunk[0].text_b is not None else None
        encoded = tokenizer(first, second, truncation=True, max_length=max_length)
        keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
        for offset, example in enumerate(chunk):
            feature = {key: list(encoded[key][offset]) for key in keys}
            feature["labels"] = example.label
            features.append(feature)
    return features


@dataclass
class TaskData:
    """A tokenized classification/regression task, ready for a DataLoader with :func:`collate`.

    Attributes:
        name: canonical task name.
        train / eval: tokenized examples (dicts of lists plus an int or float ``labels``).
        num_labels: classes, or 1 for regression.
        is_regression: STS-B.
        metric_names: metrics reported, primary first.
        primary_metric: the metric model selection uses.
        label_names: human names of the classes (empty for regression).
        source: where the data came from.
        notes: anything a user should know about the splits (e.g. a dev split standing in for train).
        train_examples / eval_examples: the raw examples behind ``train`` / ``eval``, same order.
    """

    name: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    num_labels: int
    is_regression: bool
    metric_names: tuple[str, ...]
    primary_metric: str
    label_names: tuple[str, ...]
    source: DataSource
    notes: list[str] = field(default_factory=list)
    train_examples: list[GlueExample] = field(default_factory=list, repr=False)
    eval_examples: list[GlueExample] = field(default_factory=list, repr=False)


def load_glue_task(
    name: str,
    tokenizer,
    max_length: int = 128,
    data_dir: str | Path | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    dev_split_eval_fraction: float = 0.2,
    include_train: bool = True,
) -> TaskData:
    """Load, subsample and tokenize a GLUE task.

    Args:
        name: ``sst2``, ``cola``, ``mrpc``, ``rte``, ``stsb``, ``qnli``, ``mnli``, ``mnli-mm`` or ``qqp``
            (any usual spelling).
        tokenizer: a Hugging Face tokenizer.
        max_length: truncation length in tokens.
        data_dir: explicit data folder, the only place read when given (see :mod:`aptune.data.resolve`).
        max_train_samples / max_eval_samples: seeded random subsets for quick runs.
        seed: seed of subsampling and of the dev split for tasks without a train file.
        dev_split_eval_fraction: eval share of dev when there is no train file.
        include_train: ``False`` skips reading and tokenizing the train split.

    Returns:
        A :class:`TaskData`.
    """
    splits = load_glue_examples(name, data_dir, seed, dev_split_eval_fraction, include_train)
    spec = splits.spec
    train_examples = subsample(splits.train, max_train_samples, seed)
    eval_examples = subsample(splits.eval, max_eval_samples, seed)
    return TaskData(
        name=spec.name,
        train=tokenize_pairs(train_examples, tokenizer, max_length),
        eval=tokenize_pairs(eval_examples, tokenizer, max_length),
        num_labels=spec.num_labels,
        is_regression=spec.is_regression,
        metric_names=spec.metric_names,
        primary_metric=spec.primary_metric,
        label_names=spec.label_names or spec.label_values,
        source=splits.source,
        notes=splits.notes,
        train_examples=train_examples,
        eval_examples=eval_examples,
    )
