"""Paths in a report as a reader types them, not as the machine that ran the runs had them.

The runner records its commands with absolute paths (``/root/.pyenv/.../python3 -m aptune train --config
/work/main/runs/x/runs/apt__sst2__seed42/run.yaml ...``), and a report may gather results that ran in several
runs folders, on several machines. A report prints them with

* ``python`` for the interpreter;
* ``RUNS/`` for the runs folder a run ran in (its ``run_info.run_dir`` is ``RUNS/runs/<run>``), the same for
  every result, wherever it ran;
* paths of a checkout relative to the repository (``configs/...``, ``runs/...``): the part of an absolute path
  from its first folder that is a top-level folder of the repository.

The report's own folder is named relative to the current directory, or by its name when outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

RUNS = "RUNS"
#: top-level folders of the repository: an absolute path through one is a checkout's path
REPOSITORY_FOLDERS = ("configs", "runs", "results", "benchmarks", "scripts", "examples", "src", "tests", "docs")

_PYTHON = re.compile(r"(?<![^\s`'\"])/\S*/python[\d.]*(?=[\s`'\"]|$)")
_CHECKOUT = re.compile(r"(?<![^\s`'\"=:,(])/[^\s`'\"]*?/(?=(?:" + "|".join(REPOSITORY_FOLDERS) + r")/)")


def runs_folders(results: list[dict], runs_dir: str | Path | None = None) -> list[str]:
    """The runs folders that ``results``' commands name: each result's own (``run_info.run_dir`` is
    ``<runs folder>/runs/<run>``) and ``runs_dir``, as given and resolved; longest first, so that a folder inside
    another is replaced before it."""
    folders = set()
    if runs_dir is not None:
        folders |= {str(Path(runs_dir)), str(Path(runs_dir).resolve())}
    for result in results:
        run_dir = (result.get("run_info") or {}).get("run_dir")
        if run_dir and Path(run_dir).parent.name == "runs":
            folders.add(str(Path(run_dir).parent.parent))
    return sorted((f for f in folders if f not in ("", ".", "/")), key=len, reverse=True)


def portable(text: str, folders: list[str]) -> str:
    """``text`` (a command) with the interpreter as ``python``, each of ``folders`` (see :func:`runs_folders`) as
    ``RUNS`` and any other absolute path through a repository folder made relative to the repository."""
    for folder in folders:
        text = re.sub(r"(?<![^\s`'\"=:,(])" + re.escape(folder.rstrip("/")) + r"(?=/|[\s`'\"]|$)", RUNS, text)
    text = _PYTHON.sub("python", text)
    return _CHECKOUT.sub("", text)


def shown_folder(folder: str | Path) -> str:
    """A folder as the report names it: relative to the current directory when inside it, else its name."""
    folder = Path(folder)
    if not folder.is_absolute():
        return str(folder)
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return folder.name
