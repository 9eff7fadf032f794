"""What a run tells the user while it trains: a JSONL metrics file, and progress that reads well both in a
terminal (a tqdm bar) and in a log file (one plain line every few steps, no carriage returns)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm


class JsonlLog:
    """One JSON object per line: the run's metrics file. ``trackers`` (an :class:`aptune.train.trackers.Trackers`,
    set once they are open) get every record with a step too."""

    def __init__(self, path: Path, trackers=None):
        self.file = path.open("a")
        self.trackers = trackers

    def write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.trackers is not None and "step" in record:
            self.trackers.log(record, record["step"])


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """Training progress: a bar on a terminal; on a pipe or file a line every ``every`` steps.

    Args:
        first: the step training starts from (after a resume).
        total: the last step.
        enabled: False on every process but the main one.
        every: steps between plain lines (when the output is not a terminal).
        stream: where progress goes (stderr, as tqdm's).
    """

    def __init__(self, first: int, total: int, enabled: bool = True, every: int = 10, stream=None):
        self.first, self.total, self.every = first, total, max(1, every)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.start = time.perf_counter()
        interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        if enabled and interactive:
            self.bar = tqdm(total=total, initial=first, desc="training", dynamic_ncols=True, file=self.stream)

    def update(self, done: int, **fields: float) -> None:
        """Step ``done`` finished; ``fields`` (loss, density ...) are shown with it."""
        if not self.enabled:
            return
        shown = {k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in fields.items()}
        if self.bar is not None:
            self.bar.update(1)
            if fields:
                self.bar.set_postfix(shown)
            return
        if done % self.every == 0 or done == self.total:
            elapsed = time.perf_counter() - self.start
            left = elapsed / max(1, done - self.first) * (self.total - done)
            values = " ".join(f"{k} {v}" for k, v in shown.items())
            print(f"[aptune] step {done}/{self.total} ({100 * done / max(1, self.total):.0f}%) {values} | "
                  f"{_clock(elapsed)} elapsed, ~{_clock(left)} left", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
