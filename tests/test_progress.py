"""Progress that reads well in a log file: plain lines every N steps, no carriage returns, no bar."""

from __future__ import annotations

import io

from aptune.train.progress import Progress


def test_progress_writes_plain_lines_every_n_steps_when_not_a_terminal():
    stream = io.StringIO()  # not a TTY, like `aptune train ... > log 2>&1`
    progress = Progress(first=0, total=25, every=10, stream=stream)
    for done in range(1, 26):
        progress.update(done, loss=0.5, density=0.4)
    progress.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [line.split()[2] for line in lines] == ["10/25", "20/25", "25/25"]  # every 10 steps, and the last
    assert all("loss 0.500 density 0.400" in line and "elapsed" in line for line in lines)


def test_progress_after_a_resume_counts_from_the_resumed_step_and_stays_quiet_off_the_main_process():
    stream = io.StringIO()
    progress = Progress(first=40, total=60, every=10, stream=stream)
    for done in range(41, 61):
        progress.update(done)
    assert [line.split()[2] for line in stream.getvalue().splitlines()] == ["50/60", "60/60"]
    quiet = io.StringIO()
    other = Progress(first=0, total=10, every=1, enabled=False, stream=quiet)
    for done in range(1, 11):
        other.update(done, loss=1.0)
    assert quiet.getvalue() == ""
