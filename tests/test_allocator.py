"""`aptune train` runs under tcmalloc where the machine has it (scripts/install.sh installs it), says so in the run's
summary, and APTUNE_ALLOCATOR picks another; a wrong name is one line of error. Real processes: an allocator is
chosen when a process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
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



_RELEASE = """
from aptune import allocator
from aptune.bench.process import rss_now
blocks = [bytearray(1 << 16) for _ in range(4096)]  # 256 MiB in 64 KiB blocks
kept = [bytearray(1 << 16) for _ in range(16)]  # allocated after them: what is freed is not the heap's top
full = rss_now()
del blocks
freed = rss_now()
print(allocator.current(), allocator.release_free_memory(), full, freed, rss_now())
"""


@pytest.mark.parametrize("name", allocator.CHOICES)
def test_releasing_the_free_heap_returns_what_the_process_freed(name):
    """What a run calls after its last pruning step: the 256 MiB a process freed leave its RSS. glibc and tcmalloc
    keep them until asked (jemalloc returns part of them on its own)."""
    library = allocator.find_library(name) if name != "glibc" else ""
    if library is None:
        pytest.skip(f"{name} is not installed on this machine")  # scripts/install.sh installs tcmalloc only
    done = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LD_PRELOAD": library, "OMP_NUM_THREADS": "1"})
    current, released, full, freed, after = done.stdout.split()
    assert (current, released) == (name, "True"), done.stderr[-2000:]
    full, freed, after = int(full), int(freed), int(after)
    assert after <= full - (200 << 20)
    if name != "jemalloc":
        assert freed >= full - (16 << 20)  # held until the release
