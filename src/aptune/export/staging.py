"""Write an export so that a failure leaves nothing behind and an earlier export stays whole.

Every export (Hugging Face folder, ONNX folder, GGUF file) is first written into ``<output>.partial-<pid>/``,
a sibling of the output (same file system, so the final rename is cheap), under the output's own name (a model
card names its folder). Only when the body of :func:`staged` returns (the export written and checked) do the
finished paths replace the outputs; on any exception the partial folder is removed and the outputs are as they
were. A process killed outright leaves the visible ``*.partial-<pid>`` folder, which is safe to delete.

An output that already exists is replaced only if it is a previous export of the same kind (``previous``
says so); anything else there is refused before a byte is written. So is an output that is, or lies inside,
the folder the export is made from, or contains it (:func:`check_separate`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def check_separate(source: Path, output: Path, what: str, example: Path) -> None:
    """Refuse an ``output`` that is ``source``, lies inside it or contains it: writing there would overwrite
    or mix with the files the export is made from. ``what`` names ``source`` in the message; ``example`` is an
    output to suggest."""
    source = Path(source)
    read, written = source.resolve(), Path(output).resolve()  # resolved: "runs/x/./export", links, ".."
    if written == read or read in written.parents or written in read.parents:
        where = "is" if written == read else "is inside" if read in written.parents else "contains"
        raise ValueError(f"--output {output} {where} {what} {source}; the output must be another folder, "
                         f"for example {example}")


def is_gguf_file(path: Path) -> bool:
    """A file that starts with GGUF's magic bytes (what an earlier GGUF export wrote)."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"GGUF"


def check_output(output: Path, previous: Callable[[Path], bool], kind: str, folder: bool) -> None:
    """Refuse an existing ``output`` that a ``kind`` export may not replace: a file where a folder goes (or the
    reverse), or a non-empty folder / a file that ``previous`` does not recognise as an earlier ``kind`` export."""
    if not output.exists():
        return
    if folder and not output.is_dir():
        raise ValueError(f"--output {output} is a file; the {kind} export writes a folder: name a new one")
    if not folder and output.is_dir():
        raise ValueError(f"--output {output} is a folder; the {kind} export writes one file: name it NAME.gguf")
    if folder and not any(output.iterdir()):
        return
    if not previous(output):
        held = "holds other files" if folder else "is another kind of file"
        raise ValueError(f"--output {output} already exists and {held}, not a previous {kind} export (which would "
                         "be replaced); give a new or empty folder" + ("" if folder else " or another file name"))


@contextmanager
def staged(outputs: list[Path], previous: Callable[[Path], bool], kind: str, folder: bool) -> Iterator[list[Path]]:
    """Yield one path per output (all in one folder) inside ``<first output>.partial-<pid>/`` to write to; when
    the body returns, each path written replaces its output, and on an exception nothing is left (see the module)."""
    outputs = [Path(o) for o in outputs]
    for output in outputs:
        check_output(output, previous, kind, folder)
    made = _missing_parents(outputs[0])
    outputs[0].parent.mkdir(parents=True, exist_ok=True)
    partial = outputs[0].with_name(f"{outputs[0].name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)  # a leftover of an earlier process that had this id
    partial.mkdir()
    try:
        paths = [partial / output.name for output in outputs]
        yield paths
        for path, output in zip(paths, outputs):
            if path.exists():
                _put_in_place(path, output, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for parent in made:  # the folders created for the output, deepest first: gone again if left empty
            _rmdir_if_empty(parent)
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _put_in_place(path: Path, output: Path, partial: Path) -> None:
    """Move the finished ``path`` to ``output``. An earlier export there is first moved into ``partial`` (and
    removed with it), so that ``output`` is never a mix of the two; it is moved back if the move fails."""
    previous = None
    if output.is_dir():
        if any(output.iterdir()):
            previous = output.rename(partial / f"{output.name}.previous")
        else:
            output.rmdir()
    try:
        path.replace(output)  # a file over an earlier file: one atomic step
    except OSError:
        if previous is not None:
            previous.rename(output)
        raise


def _missing_parents(output: Path) -> list[Path]:
    """The folders above ``output`` that do not exist yet, deepest first."""
    missing = []
    for parent in Path(output).absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
