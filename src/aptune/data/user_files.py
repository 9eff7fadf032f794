"""Users' own data sets: a table of texts and labels, or instruction records, in a file.

API for the trainer::

    data = load_user_classification("reviews.csv", "reviews_dev.csv", tokenizer, max_length=128,
                                    columns=TableColumns(text="review", label="sentiment"))
    data.train, data.eval      # lists of {"input_ids", "attention_mask", ["token_type_ids"], "labels"}
    data.label_names           # ("neg", "pos"): the sorted distinct labels of the train file
    data.num_labels, data.is_regression
    metric_names = select_metrics(data.is_regression, data.num_labels, "f1", known=("accuracy", "f1", "mcc"))

    chat = load_user_instruction_data("chats.jsonl", None, tokenizer, max_length=512,
                                      fields=InstructionFields(messages="messages"))

Formats, by extension: ``.csv``, ``.tsv`` (CSV quoting, tab-separated), ``.jsonl`` / ``.json`` (JSON Lines or
one JSON array of objects) and ``.parquet``. They are read with the ``datasets`` library, which reads local
files offline; only empty CSV cells count as missing (``NA`` or ``null`` is text, as a review may say), and a
CSV row with more or fewer fields than the header is refused rather than shifted.

Labels: strings or whole numbers are classes, named by the sorted distinct values of the train file (so
``neg``/``pos`` become ids 0/1); an eval label the train file does not have is an error. Numbers that are
not all whole make a regression task. With no ``eval_file`` a seeded 10% of the train file is held out for
evaluation (as GLUE QNLI's dev split is in :mod:`aptune.data.glue`), and a note says so.

Rows are numbered from 1 over the data rows (the header does not count). Errors say which row and, where
the file has lines, which line it starts on: ``reviews.csv:8: row 7 (line 8 of the file): ...``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aptune.data.files import DataFormatError, iter_json_records
from aptune.data.glue import GlueExample, TaskData, tokenize_pairs
from aptune.data.instruct import (
    ALPACA_FIELDS,
    InstructionData,
    InstructionFields,
    InstructionRecord,
    record_from_mapping,
    tokenize_instruction_splits,
)
from aptune.data.resolve import DataSource
from aptune.data.splits import split_examples, subsample

logger = logging.getLogger("aptune.data")

EVAL_FRACTION = 0.1  # held out of the train file when no eval file is given
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"

# extension -> (datasets builder, its options)
FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
}
# pandas would read "NA", "null", "None"... as missing; in a text column those are words
_CSV_MISSING = {"keep_default_na": False, "na_values": [""]}


# ------------------------------------------------------------------------------------------ reading


@dataclass
class Table:
    """The rows of a user's file (dicts by column name, file order) and its column names."""

    path: Path
    rows: list[dict[str, Any]]
    columns: list[str]

    def error(self, row: int, problem: str) -> DataFormatError:
        """An error about data row ``row`` (1-based), naming the line it starts on when the file has lines."""
        line = row_line(self.path, row)
        where = f"row {row} (line {line} of the file)" if line is not None else f"row {row}"
        return DataFormatError(self.path, line, f"{where}: {problem}")

    def require(self, column: str, setting: str) -> None:
        """Refuse a column the file does not have, listing those it has."""
        if column not in self.columns:
            raise DataFormatError(self.path, None, f"no column {column!r} ({setting}); the file's columns "
                                                   f"are: {', '.join(map(repr, self.columns))}")


def file_format(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The ``datasets`` builder and options for a file, chosen by its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(f"{path}: cannot tell the format from the extension {suffix!r}; use one of "
                         f"{', '.join(FILE_FORMATS)}")
    builder, options = FILE_FORMATS[suffix]
    return builder, {**options, **(_CSV_MISSING if builder == "csv" else {})}


def read_table(path: str | Path, setting: str = "data.train_file") -> Table:
    """Read a CSV / TSV / JSON Lines / Parquet file into rows.

    Args:
        path: the file.
        setting: the config key that named it, for messages.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an extension aptune does not read.
        DataFormatError: the file cannot be parsed, or has no data rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{setting}: {path} does not exist" if not path.exists()
                                else f"{setting}: {path} is not a file")
    builder, options = file_format(path)
    if builder != "parquet":
        _check_utf8(path)
    _check_records(builder, path, options)
    try:
        rows, columns = _load_rows(builder, path, options)
    except Exception as err:  # datasets wraps pandas / pyarrow parse errors in several exception types
        cause = err.__cause__ or err
        raise DataFormatError(path, None, f"cannot be read as {builder}: {type(cause).__name__}: {cause}") from err
    if not rows:
        raise DataFormatError(path, None, "the file has no data rows")
    return Table(path, rows, columns)


def _load_rows(builder: str, path: Path, options: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """``datasets.load_dataset`` on one local file with a throwaway cache (a user's file should not leave Arrow
    copies in ~/.cache, and parallel runs should not share cache locks); rows and column names."""
    import datasets  # here, not at the top: it takes a second to import, and aptune.data is imported everywhere

    with tempfile.TemporaryDirectory(prefix="aptune-datasets-") as cache, _quiet_progress(datasets):
        dataset = datasets.load_dataset(builder, data_files=[str(path)], split="train", cache_dir=cache,
                                        keep_in_memory=True, **options)
        return dataset.to_list(), list(dataset.column_names)


@contextlib.contextmanager
def _quiet_progress(datasets) -> Iterator[None]:
    """No "Generating train split" bars for a local file that loads in a moment."""
    was_enabled = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _check_utf8(path: Path) -> None:
    """Text formats are read as UTF-8: a file in another encoding (Latin-1, Windows-1252 from a spreadsheet) is
    refused by line, with the byte, instead of a decoder error that names no file."""
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(path, line, f"is not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                                  f"{err.start + 1}); save the file as UTF-8, e.g. "
                                                  f"iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}") from None


def _check_records(builder: str, path: Path, options: dict[str, Any]) -> None:
    """Refuse, by line, what the ``datasets`` readers would get wrong silently or report vaguely: a CSV row with
    more or fewer fields than the header (pandas drops the extra ones or shifts the columns), a line of JSON
    that does not parse or is not an object."""
    if builder == "csv":
        _check_csv_fields(path, options.get("delimiter", ","))
    elif builder == "json":
        for line, record in iter_json_records(path):
            if not isinstance(record, dict):
                raise DataFormatError(path, line, f"expected a JSON object (one record), found {type(record).__name__}")


def _check_csv_fields(path: Path, delimiter: str) -> None:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise DataFormatError(path, 1, "the file is empty (expected a header line naming the columns)")
        start, row = reader.line_num + 1, 0
        for fields in reader:
            if fields:
                row += 1
                if len(fields) != len(header):
                    expected = f"{len(header)} fields ({', '.join(header)})"
                    raise DataFormatError(path, start, f"row {row} (line {start} of the file): expected {expected}, "
                                                       f"found {len(fields)}")
            start = reader.line_num + 1
    if row == 0:
        raise DataFormatError(path, None, "the file has no data rows (only a header)")


def row_line(path: str | Path, row: int) -> int | None:
    """The line data row ``row`` (1-based) starts on; ``None`` for Parquet (no lines) or a row not found.

    Only called for error messages, so the file is read again: a quoted CSV field may span lines, and
    blank lines are skipped, so the line is not always ``row + 1``.
    """
    builder, options = file_format(path)
    if builder == "csv":
        return _csv_row_line(Path(path), row, options.get("delimiter", ","))
    if builder == "json":
        return next((line for number, (line, _) in enumerate(iter_json_records(path), 1) if number == row), None)
    return None


def _csv_row_line(path: Path, row: int, delimiter: str) -> int | None:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        start, seen = 1, -1  # the header is record 0
        for fields in reader:
            if fields:
                seen += 1
                if seen == row:
                    return start
            start = reader.line_num + 1
    return None


# ------------------------------------------------------------------------------------------ labels


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _is_whole(value: Any) -> bool:
    return isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer())


@dataclass(frozen=True)
class LabelScheme:
    """How a file's labels become targets: class ids by ``names`` (sorted train labels), or regression scores."""

    names: tuple[str, ...]
    is_regression: bool

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.names)

    @staticmethod
    def from_train_labels(values: Sequence[Any], path: Path, column: str) -> LabelScheme:
        """Classes for strings or whole numbers (sorted as numbers), regression for other numbers."""
        texts = [value for value in values if isinstance(value, str)]
        if texts and len(texts) != len(values):
            raise DataFormatError(path, None, f"the labels in column {column!r} mix text and numbers; use one kind")
        if texts:
            names = tuple(sorted(set(value.strip() for value in texts)))
        elif all(_is_whole(value) for value in values):
            names = tuple(str(value) for value in sorted(set(int(value) for value in values)))
        else:
            return LabelScheme((), is_regression=True)
        if len(names) < 2:
            raise DataFormatError(path, None, f"column {column!r} has only the label {names[0]!r}; a classifier "
                                              "needs at least two classes")
        return LabelScheme(names, is_regression=False)

    def target(self, value: Any) -> int | float | None:
        """The class id or score of a label; ``None`` when it is not one this scheme knows."""
        if self.is_regression:
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        key = value.strip() if isinstance(value, str) else str(int(value)) if _is_whole(value) else None
        return self.names.index(key) if key in self.names else None


# ------------------------------------------------------------------------------------------ text tables


@dataclass(frozen=True)
class TableColumns:
    """Which columns hold the text (and the optional second text of a pair) and the label."""

    text: str = DEFAULT_TEXT_COLUMN
    label: str = DEFAULT_LABEL_COLUMN
    text_pair: str | None = None

    @staticmethod
    def from_settings(text: str | None, label: str | None, text_pair: str | None) -> TableColumns:
        """From config keys where ``None`` means the default column name."""
        return TableColumns(text or DEFAULT_TEXT_COLUMN, label or DEFAULT_LABEL_COLUMN, text_pair)

    def check(self, table: Table) -> None:
        table.require(self.text, "data.text_column")
        table.require(self.label, "data.label_column")
        if self.text_pair is not None:
            table.require(self.text_pair, "data.text_pair_column")


def _texts(table: Table, number: int, row: dict[str, Any], columns: TableColumns) -> tuple[str, str | None]:
    texts = []
    for column in (columns.text, columns.text_pair):
        if column is None:
            texts.append(None)
            continue
        if _is_missing(row[column]):
            raise table.error(number, f"the text in column {column!r} is missing or empty")
        texts.append(str(row[column]))
    return texts[0], texts[1]


def _raw_labels(table: Table, columns: TableColumns) -> list[Any]:
    labels = []
    for number, row in enumerate(table.rows, start=1):
        if _is_missing(row[columns.label]):
            raise table.error(number, f"the label in column {columns.label!r} is missing or empty")
        labels.append(row[columns.label])
    return labels


def _examples(table: Table, columns: TableColumns, scheme: LabelScheme) -> list[GlueExample]:
    """Validated examples of a table under the train file's label scheme."""
    examples = []
    for number, (row, raw) in enumerate(zip(table.rows, _raw_labels(table, columns)), start=1):
        text_a, text_b = _texts(table, number, row, columns)
        label = scheme.target(raw)
        if label is None:
            known = "a number (the train file's labels are scores)" if scheme.is_regression else \
                f"one of the train file's labels: {', '.join(map(repr, scheme.names))}"
            raise table.error(number, f"label {raw!r} in column {columns.label!r} is not {known}")
        examples.append(GlueExample(text_a, text_b, label, f"{table.path}:row {number}"))
    return examples


def _held_out(examples: list, train_file: Path, seed: int, notes: list[str]) -> tuple[list, list]:
    """Split a seeded eval part off the train file's examples, with a note saying so."""
    train, evaluation = split_examples(examples, EVAL_FRACTION, seed)
    if not train or not evaluation:
        raise DataFormatError(train_file, None, f"{len(examples)} row(s) cannot be split into train and eval; "
                                                "give data.eval_file or more rows")
    note = (f"no data.eval_file: held out {len(evaluation)} of the {len(examples)} rows of {train_file.name} "
            f"(seed {seed}, {EVAL_FRACTION:.0%}) for evaluation; training on the other {len(train)}")
    notes.append(note)
    logger.warning("%s", note)
    return train, evaluation


def load_user_classification(
    train_file: str | Path,
    eval_file: str | Path | None,
    tokenizer,
    max_length: int = 128,
    columns: TableColumns = TableColumns(),
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> TaskData:
    """Read, check, split, subsample and tokenize a user's classification or regression files into the
    :class:`~aptune.data.glue.TaskData` a GLUE task gives (named after the train file, its default metrics
    by label kind: :func:`default_metrics`).

    Args:
        train_file: the training table.
        eval_file: the evaluation table (same columns); ``None`` holds out 10% of ``train_file``.
        tokenizer: a Hugging Face tokenizer.
        max_length: truncation length in tokens.
        columns: the text, optional pair and label columns.
        seed: seed of the held-out split and of subsampling.
        max_train_samples / max_eval_samples: seeded random subsets for quick runs.

    Raises:
        FileNotFoundError, ValueError, DataFormatError: a missing file, an unknown format or column, a row
            without text or label, an eval label the train file does not have.
    """
    train_table = read_table(train_file, "data.train_file")
    columns.check(train_table)
    scheme = LabelScheme.from_train_labels(_raw_labels(train_table, columns), train_table.path, columns.label)
    train_examples = _examples(train_table, columns, scheme)
    notes: list[str] = []
    if eval_file is None:
        train_examples, eval_examples = _held_out(train_examples, train_table.path, seed, notes)
    else:
        eval_table = read_table(eval_file, "data.eval_file")
        columns.check(eval_table)
        eval_examples = _examples(eval_table, columns, scheme)
    train_examples = subsample(train_examples, max_train_samples, seed)
    eval_examples = subsample(eval_examples, max_eval_samples, seed)
    metric_names = default_metrics(scheme.is_regression, scheme.num_labels)
    return TaskData(
        name=train_table.path.stem,
        train=tokenize_pairs(train_examples, tokenizer, max_length),
        eval=tokenize_pairs(eval_examples, tokenizer, max_length),
        num_labels=scheme.num_labels,
        is_regression=scheme.is_regression,
        metric_names=metric_names,
        primary_metric=metric_names[0],
        label_names=scheme.names,
        source=DataSource("file", str(train_table.path)),
        notes=notes,
        train_examples=train_examples,
        eval_examples=eval_examples,
    )


# ------------------------------------------------------------------------------------------ metrics


def default_metrics(is_regression: bool, num_labels: int) -> tuple[str, ...]:
    """Accuracy (plus F1 of class 1 for two classes), or Pearson and Spearman for scores."""
    if is_regression:
        return ("pearson", "spearman")
    return ("accuracy", "f1") if num_labels == 2 else ("accuracy",)


def select_metrics(
    is_regression: bool, num_labels: int, override: str | None, known: Sequence[str],
    defaults: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The metrics to report, the primary (model-selection) one first.

    Args:
        is_regression / num_labels: the task's label kind.
        override: ``data.metric``: the primary metric, or ``None`` for the default.
        known: the metric names that exist for this label kind (``aptune.eval.metrics`` passes them in, so
            this module needs no evaluation code).
        defaults: the task's own metrics (a GLUE task's); ``None``: :func:`default_metrics`.

    Raises:
        ValueError: a metric that does not exist or does not fit the labels.
    """
    chosen = tuple(defaults) if defaults is not None else default_metrics(is_regression, num_labels)
    if override is None:
        return chosen
    kind = "regression (score) labels" if is_regression else "class labels"
    if override not in known:
        raise ValueError(f"data.metric={override!r} is not a metric for {kind}; choose one of {', '.join(known)}")
    if override == "f1" and num_labels != 2:
        raise ValueError(f"data.metric='f1' is the binary F1 of class 1, but the task has {num_labels} classes; "
                         "choose accuracy or mcc")
    return (override, *(name for name in chosen if name != override))


# ------------------------------------------------------------------------------------------ instructions


def read_instruction_table(path: str | Path, setting: str, fields: InstructionFields) -> list[InstructionRecord]:
    """A user's instruction records from any file format :func:`read_table` reads, checked against ``fields``;
    ``setting`` is the config key that named the file, for messages."""
    return _instruction_records(read_table(path, setting), fields)


def _instruction_records(table: Table, fields: InstructionFields) -> list[InstructionRecord]:
    if fields.messages is not None:
        table.require(fields.messages, "data.messages_field")
    else:
        table.require(fields.instruction, "data.instruction_field")
        table.require(fields.output, "data.output_field")
        if fields.input != ALPACA_FIELDS.input:  # a renamed input field must exist; the default is optional
            table.require(fields.input, "data.input_field")
    records = []
    for number, row in enumerate(table.rows, start=1):
        try:
            record = record_from_mapping(row, str(table.path), number, fields)
        except DataFormatError as err:
            raise table.error(number, err.problem) from None
        records.append(replace(record, origin=f"{table.path}:row {number}"))
    return records


def load_user_instruction_data(
    train_file: str | Path,
    eval_file: str | Path | None,
    tokenizer,
    max_length: int = 512,
    fields: InstructionFields = ALPACA_FIELDS,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    prompt_style: str = "auto",
) -> InstructionData:
    """Instruction records from a user's files (any format of :data:`FILE_FORMATS`; chat ``messages`` need
    JSON Lines or Parquet), tokenized with labels on the response only (:mod:`aptune.data.instruct`).

    Args:
        fields: the records' field names, or the chat messages field.
        eval_file: held-out records; ``None`` holds out 10% of ``train_file``.
        Others: as in :func:`load_user_classification`.
    """
    train_records = read_instruction_table(train_file, "data.train_file", fields)
    if eval_file is None:
        train_records, eval_records = _held_out(train_records, Path(train_file), seed, [])
    else:
        eval_records = read_instruction_table(eval_file, "data.eval_file", fields)
    return tokenize_instruction_splits(train_records, eval_records, DataSource("file", str(Path(train_file))),
                                      tokenizer, max_length, seed, max_train_samples, max_eval_samples, prompt_style)
