"""Strict readers for the data file formats aptune uses: GLUE TSV, CSV, JSON lines and JSON arrays.

Every reader reports the line each record starts on, and every problem is raised as a
:class:`DataFormatError` whose message begins with ``path:line:``, so a bad row can be found with an
editor's go-to-line. Readers never guess: a row with the wrong number of fields, a missing column or
an undecodable line is an error, not a silently skipped example.

GLUE TSVs are read with ``csv.QUOTE_NONE`` and ``utf-8-sig``: the GLUE files are not quoted CSV
(MRPC, STS-B and QNLI contain unbalanced ``"``) and MRPC starts with a UTF-8 byte-order mark.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the line.

    Attributes:
        path: the file.
        line: 1-based line number of the offending record (``None`` when the whole file is at fault).
    """

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Row:
    """One record of a tabular file: its fields by column name and the line it starts on."""

    fields: dict[str, str]
    line: int


def read_tsv(
    path: str | Path,
    required_columns: Sequence[str],
    fieldnames: Sequence[str] | None = None,
) -> list[Row]:
    """Read a GLUE-style TSV file, checking every row has exactly as many fields as the header.

    Args:
        path: the ``.tsv`` file.
        required_columns: columns the caller will read; a header without one of them is an error.
        fieldnames: column names for a file without a header line (CoLA); ``None`` reads the header
            from the first line.

    Returns:
        The data rows in file order.

    Raises:
        DataFormatError: a missing column, or a row with too few or too many fields (a truncated line).
    """
    path = Path(path)
    rows: list[Row] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if fieldnames is None:
            try:
                header = next(reader)
            except StopIteration:
                raise DataFormatError(path, 1, "the file is empty (expected a header line)") from None
            header_line = reader.line_num
        else:
            header, header_line = list(fieldnames), None
        missing = [column for column in required_columns if column not in header]
        if missing:
            raise DataFormatError(
                path,
                header_line or 1,
                f"missing column(s) {', '.join(map(repr, missing))}; the header has {header}",
            )
        for fields in reader:
            line = reader.line_num
            if not fields:  # a blank line, e.g. an extra newline at the end
                continue
            if len(fields) != len(header):
                raise DataFormatError(
                    path,
                    line,
                    f"expected {len(header)} tab-separated fields ({', '.join(header)}), found {len(fields)}"
                    " (a truncated or merged line?)",
                )
            rows.append(Row(dict(zip(header, fields)), line))
    return rows


def read_csv(path: str | Path, num_fields: int) -> list[Row]:
    """Read a header-less CSV file (MMLU) whose rows all have ``num_fields`` fields.

    Fields are named ``"0"``, ``"1"``, ... Quoted fields may span several lines; ``Row.line`` is the
    line the record starts on.
    """
    path = Path(path)
    rows: list[Row] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        start = 1
        try:
            for fields in reader:
                if fields:
                    if len(fields) != num_fields:
                        raise DataFormatError(
                            path, start, f"expected {num_fields} comma-separated fields, found {len(fields)}"
                        )
                    rows.append(Row({str(i): value for i, value in enumerate(fields)}, start))
                start = reader.line_num + 1
        except csv.Error as err:
            raise DataFormatError(path, start, f"unreadable CSV record ({err})") from None
    return rows


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, object)`` for each non-blank line of a JSON-lines file.

    Raises:
        DataFormatError: a line that is not valid JSON (for example a line cut short).
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig") as handle:
        for line_number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield line_number, json.loads(text)
            except json.JSONDecodeError as err:
                raise DataFormatError(path, line_number, f"invalid JSON ({err.msg} at column {err.colno})") from None


def iter_json_array(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, element)`` for each element of a file holding one JSON array.

    Unlike ``json.load`` this knows the line each element starts on, so a bad record in a
    1,000-element file can be reported by line.

    Raises:
        DataFormatError: the file is not a JSON array, or an element is not valid JSON.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder()

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    def skip_space(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    position = skip_space(0)
    if position >= len(text) or text[position] != "[":
        raise DataFormatError(path, line_of(position), "expected a JSON array (the file should start with '[')")
    position = skip_space(position + 1)
    if position < len(text) and text[position] == "]":
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, err.lineno, f"invalid JSON ({err.msg} at column {err.colno})") from None
        yield line_of(position), element
        position = skip_space(end)
        if position >= len(text):
            raise DataFormatError(path, line_of(position), "the JSON array is not closed (file truncated?)")
        if text[position] == "]":
            return
        if text[position] != ",":
            found = text[position]
            raise DataFormatError(path, line_of(position), f"expected ',' or ']' between elements, found {found!r}")
        position = skip_space(position + 1)


def iter_json_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, record)`` from a JSON array file or a JSON-lines file, whichever ``path`` is.

    The format is decided by the first non-blank character: ``[`` means one JSON array.
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig") as handle:
        first = handle.read(4096).lstrip()
    if first.startswith("["):
        yield from iter_json_array(path)
    else:
        yield from iter_jsonl(path)
