"""`aptune train` runs under tcmalloc where the machine has it (scripts/install.sh installs it), says so in the run's
summary, and APTUNE_ALLOCATOR picks another; a wrong name is one line of error. Real processes: an allocator is
chosen when a process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_train_loop import TINY_RUN

from aptune import allocator


def _train(run, base, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aptune", "train", "--no-latency", f"output_dir={run}",
                           f"model.name={base}", *TINY_RUN], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def _allocator_of(run) -> str:
    return json.loads((run / "summary.json").read_text())["provenance"]["allocator"]


def test_a_run_goes_under_the_preferred_allocator_found_and_records_it(tiny_base, tmp_path):
    done = _train(tmp_path / "run", tiny_base)
    assert done.returncode == 0, done.stderr[-2000:]
    # scripts/install.sh installs tcmalloc where it may use the system's packages; elsewhere the next one found
    expected = next((name for name in allocator.PREFERRED if allocator.find_library(name)), "glibc")
    assert _allocator_of(tmp_path / "run") == expected
    if expected == "glibc":  # none installed: one line says so, and the run goes on
        assert "[aptune] allocator: glibc (tcmalloc or jemalloc not found" in done.stderr


def test_the_allocator_can_be_chosen_and_a_wrong_name_is_one_line(tiny_base, tmp_path):
    done = _train(tmp_path / "run", tiny_base, APTUNE_ALLOCATOR="glibc")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _allocator_of(tmp_path / "run") == "glibc"
    wrong = _train(tmp_path / "other", tiny_base, APTUNE_ALLOCATOR="mimalloc")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip() == ("aptune: error: APTUNE_ALLOCATOR='mimalloc': choose one of tcmalloc, jemalloc, "
                                    "glibc (unset: tcmalloc, else jemalloc, where installed)")

