"""Where data comes from: an explicit folder, ``$APTUNE_DATA``, the shared folder beside the checkout, the hub.

A folder the user names (``data_dir``: ``--data-dir`` on the command line, ``data.data_dir`` in a config) is
the only place read: when it does not exist or lacks a file the data set needs, that is an error naming the
missing files, and nothing else is tried (data from elsewhere would pass for the user's own).

Without one, the first place that has the files wins:

1. the folder named by the environment variable ``$APTUNE_DATA``;
2. ``shared/data`` beside the checkout: for the checkout that holds the installed package and for the
   one holding the working directory (found by walking up to a folder with ``pyproject.toml`` or
   ``.git``), ``<checkout>/../shared/data`` and then ``<checkout>/shared/data``;
3. the Hugging Face hub through the ``datasets`` library, when it is installed (imported lazily).

Each data set names the file(s) it needs relative to such a root, e.g. ``SST-2/dev.tsv``. A root may
also be the data set's own folder (``--data-dir ~/glue_data/SST-2``) or the official GLUE download
folder that holds ``glue_data/``. The place used is logged on the ``aptune.data`` logger and kept in
:class:`DataSource`, whose ``str()`` says it in words for the commands to print; when nothing works,
:class:`DataNotFoundError` lists every place tried and why it failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("aptune.data")

ENV_VAR = "APTUNE_DATA"


class DataNotFoundError(FileNotFoundError):
    """No place in the resolution order has the data set; the message lists every place tried."""


@dataclass(frozen=True)
class DataSource:
    """The place a data set was read from.

    Attributes:
        kind: ``"data_dir"``, ``"env"``, ``"shared"``, ``"hub"``, or ``"file"`` for a file named directly.
        location: the file or folder on disk, or the hub id (``"nyu-mll/glue:sst2"``).
        note: what a user should know about how the data was taken from there (a dev set split in two).
    """

    kind: str
    location: str
    note: str = ""

    def describe(self) -> str:
        """E.g. ``the shared data folder beside the checkout (/work/shared/data/SST-2)``, then the note."""
        where = f"{_KIND_LABELS.get(self.kind, self.kind)} ({self.location})"
        return f"{where}; {self.note}" if self.note else where

    def __str__(self) -> str:  # what f"{task.source}" prints
        return self.describe()


_KIND_LABELS = {
    "data_dir": "the given data folder",
    "env": f"${ENV_VAR}",
    "shared": "the shared data folder beside the checkout",
    "hub": "the Hugging Face hub",
    "file": "the file",
}


@dataclass
class Resolved:
    """A resolved data set: local ``paths`` (one per requested file) or ``hub_data`` from the hub loader."""

    source: DataSource
    paths: list[Path] = field(default_factory=list)
    hub_data: Any = None


def _checkout_roots() -> list[Path]:
    """Checkout folders (holding ``pyproject.toml`` or ``.git``) above the package and the working dir."""
    roots: list[Path] = []
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
                if folder not in roots:
                    roots.append(folder)
                break
    return roots


def find_shared_data_dir() -> Path | None:
    """The ``shared/data`` folder beside the checkout, or ``None`` when there is none."""
    for root in _checkout_roots():
        for candidate in (root.parent / "shared" / "data", root / "shared" / "data"):
            if candidate.is_dir():
                return candidate
    return None


def local_roots(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path | None, str]]:
    """The local roots in resolution order as ``(kind, folder or None, why None)``."""
    roots: list[tuple[str, Path | None, str]] = []
    roots.append(("data_dir", Path(data_dir).expanduser(), "") if data_dir else
                 ("data_dir", None, "no data folder given (--data-dir / data.data_dir)"))
    env_value = os.environ.get(ENV_VAR)
    roots.append(("env", Path(env_value).expanduser(), "") if env_value else ("env", None, "not set"))
    shared = find_shared_data_dir()
    checkouts = ", ".join(str(root) for root in _checkout_roots()) or "none found"
    roots.append(
        ("shared", shared, "")
        if shared
        else ("shared", None, f"no shared/data beside the checkout (checkouts: {checkouts})")
    )
    return roots


def _candidates(root: Path, relative: str) -> list[Path]:
    """Where ``relative`` (e.g. ``SST-2/dev.tsv``) may sit under ``root``."""
    rel = Path(relative)
    found = [root / rel, root / "glue_data" / rel]
    # The root may be the data set's own folder: ``--data-dir ~/glue_data/SST-2``.
    if len(rel.parts) > 1 and root.name.lower() == rel.parts[0].lower():
        found.append(root.joinpath(*rel.parts[1:]))
    return found


def resolve_data(
    what: str,
    files: Sequence[str],
    data_dir: str | os.PathLike | None = None,
    hub_loader: Callable[[], Any] | None = None,
    hub_id: str | None = None,
    optional_files: Sequence[str] = (),
) -> Resolved:
    """Find a data set in the resolution order.

    Args:
        what: human name of the data set, for messages (``"GLUE SST-2"``).
        files: files the data set needs, relative to a data root (``["SST-2/train.tsv", ...]``); a root
            counts only if it has all of them.
        data_dir: explicit folder: the only place read when given.
        hub_loader: called when no local root has the files; returns the hub data or raises.
        hub_id: name of the hub data set, for messages.
        optional_files: files used when present in the folder where ``files[0]`` was found (e.g. a
            train split that can otherwise be carved out of dev); their paths are returned whether or
            not they exist, so check ``Path.exists``.

    Returns:
        A :class:`Resolved` with ``paths`` (``files`` then ``optional_files``) or ``hub_data``.

    Raises:
        DataNotFoundError: ``data_dir`` does not exist or lacks one of ``files`` (the message names them);
            or, without it, no place has the data (the message names every place tried).
    """
    if data_dir:
        return _from_given_folder(what, files, Path(data_dir).expanduser(), optional_files)
    tried: list[str] = []
    for kind, root, why_not in local_roots(None):
        if root is None:
            tried.append(why_not if kind == "data_dir" else f"{_KIND_LABELS[kind]}: {why_not}")
            continue
        label = DataSource(kind, str(root)).describe()
        if not root.is_dir():
            tried.append(f"{label}: not a directory")
            continue
        paths, missing = _find_files(root, files)
        if missing:
            tried.append(f"{label}: {root / missing[0]} not found")
            continue
        return _resolved(kind, what, files, paths, optional_files)
    hub_label = f"the Hugging Face hub ({hub_id})" if hub_id else "the Hugging Face hub"
    if hub_loader is None:
        tried.append(f"{hub_label}: no hub copy is known for this data set")
    else:
        try:
            data = hub_loader()
        except ImportError:
            tried.append(f"{hub_label}: the `datasets` package is not installed (pip install datasets)")
        except Exception as err:  # the hub raises many kinds (offline, gated, unknown config)
            tried.append(f"{hub_label}: {type(err).__name__}: {err}")
        else:
            source = DataSource("hub", hub_id or "hub")
            logger.info("%s: using %s", what, source.describe())
            return Resolved(source, hub_data=data)
    places = "\n  - ".join(tried)
    raise DataNotFoundError(
        f"could not find {what}; tried, in order:\n  - {places}\n"
        f"Pass --data-dir (or set ${ENV_VAR}) to a folder holding {files[0]}."
    )


def _find_files(root: Path, files: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The path of each file under ``root`` (see :func:`_candidates`), and the files that are not there."""
    paths, missing = [], []
    for relative in files:
        match = next((path for path in _candidates(root, relative) if path.is_file()), None)
        if match is None:
            missing.append(relative)
        else:
            paths.append(match)
    return paths, missing


def _resolved(kind: str, what: str, files: Sequence[str], paths: list[Path], optional_files: Sequence[str]) -> Resolved:
    folder = paths[0].parent
    paths = [*paths, *(folder / Path(relative).name for relative in optional_files)]
    source = DataSource(kind, str(folder if len(files) > 1 or optional_files else paths[0]))
    logger.info("%s: using %s", what, source.describe())
    return Resolved(source, paths=paths)


def _from_given_folder(what: str, files: Sequence[str], root: Path, optional_files: Sequence[str]) -> Resolved:
    """The files from the folder the user named, or an error naming what it lacks; no other place is tried."""
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataNotFoundError(f"{what}: the data folder {root} (--data-dir / data.data_dir) {state}; when a data "
                                f"folder is given, nothing else is read")
    paths, missing = _find_files(root, files)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        looked = ", ".join(str(path) for path in _candidates(root, missing[0]))
        raise DataNotFoundError(
            f"{what}: the data folder {root} (--data-dir / data.data_dir) lacks {shown} (looked for {looked}); "
            f"put the missing file(s) there, or leave the data folder out to use $APTUNE_DATA, the shared data "
            f"or the hub"
        )
    return _resolved("data_dir", what, files, paths, optional_files)


def load_hub_dataset(path: str, name: str | None = None, split: str | None = None):
    """``datasets.load_dataset`` imported lazily, so ``datasets`` stays an optional dependency."""
    import datasets  # noqa: PLC0415  (optional dependency)

    return datasets.load_dataset(path, name, split=split)
