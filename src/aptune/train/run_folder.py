"""A run folder belongs to one run: a lock while it trains, and no silent reuse of a previous run's files.

* :func:`claim` takes an exclusive lock on ``<output_dir>/.lock`` (``fcntl.flock``, released by the operating
  system when the process ends, even on a crash) and writes the holder's PID and start time into it, so a
  second run into the same folder fails at once and says who holds it.
* A folder that already holds a run (its ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``export/``,
  ``checkpoints/`` or a tracker's folder) is refused unless the run asks to continue it (``train.resume=true``)
  or to replace it (``train.overwrite=true``, which removes those files first).
* :func:`truncate_log` cuts ``metrics.jsonl`` back to a checkpoint's step before a resumed run appends to it,
  so no step is logged twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from aptune.train.trackers import FOLDERS as TRACKER_FOLDERS

RUN_FILES = ("config.yaml", "metrics.jsonl", "schedule.json", "summary.json")
RUN_FOLDERS = ("export", "checkpoints", *TRACKER_FOLDERS.values())  # and the folders train.report_to's trackers write


class RunFolderBusy(OSError):
    """Another process holds the run folder's lock (an OSError, like the busy resource it is: the command line
    reports it as the user's error, in one line)."""


def previous_run_files(folder: Path) -> list[Path]:
    """The files and folders of an earlier run in ``folder`` (empty for a fresh folder)."""
    found = [folder / name for name in (*RUN_FILES, *RUN_FOLDERS) if (folder / name).exists()]
    return found + sorted(folder.glob("masks.rank*.json"))


def claim(folder: Path, resume: bool, overwrite: bool):
    """Lock ``folder`` for this run and check what it holds; returns the open lock file (keep it open).

    Raises:
        RunFolderBusy: another run holds the folder.
        ValueError: the folder holds an earlier run and neither ``resume`` nor ``overwrite`` was asked.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder / ".lock")
    previous = previous_run_files(folder)
    if previous and overwrite:
        for path in previous:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif previous and not resume:
        lock.close()
        names = ", ".join(p.name for p in previous)
        finished = "a finished run" if (folder / "summary.json").exists() else "an earlier run"
        raise ValueError(f"{folder} holds {finished} ({names}); set train.resume=true to continue it, "
                         f"train.overwrite=true to replace it, or choose another output_dir")
    return lock


def _lock(path: Path):
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderBusy(f"{path.parent} is in use by {holder}; wait for it to finish or choose another "
                            "output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"PID {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    handle.flush()
    return handle


def truncate_log(path: Path, step: int) -> int:
    """Keep the records of ``path`` (JSON lines) up to ``step``; returns how many were dropped."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)
