"""The process's memory allocator: ``aptune`` trains under tcmalloc (or jemalloc) where the machine has one.

glibc's malloc keeps the heap a run frees: after each physical cut the tensors change shape, the freed blocks
rarely fit the next requests, and the process's RSS climbs well past what its tensors hold. tcmalloc and jemalloc
return freed pages to the system, for the same results to the bit. On the main job, peak RSS is 1.01 GiB under
tcmalloc, 0.97 under jemalloc and 2.78 under glibc; tcmalloc is tried first because jemalloc slowed full
fine-tuning and self-distillation by a fifth there (results/memory/README.md).

An allocator is chosen when a process starts, so ``aptune train`` and ``aptune ablate`` (also as ``python -m
aptune``) re-execute themselves once with the library in ``LD_PRELOAD`` when it is not loaded yet; the runs they
start (the ablation runner's, ``accelerate launch``'s workers) inherit it. ``APTUNE_ALLOCATOR`` picks one
(``tcmalloc``, ``jemalloc``, or ``glibc`` for none); unset, the first found of tcmalloc then jemalloc. Where none
is found the command says so in one line and goes on with glibc. Code that calls :func:`aptune.train.train` from its
own process keeps the allocator that process started with: :func:`current` names it, and every run records it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TRAINING_COMMANDS = ("train", "ablate")  # the commands whose memory grows with a run (the others start and end)
# the shared libraries by allocator, in the order tried: Debian/Ubuntu, Fedora/RHEL, and a conda environment
_LIBRARIES = {
    "tcmalloc": ("libtcmalloc.so.4", "libtcmalloc_minimal.so.4", "libtcmalloc.so"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
}
PREFERRED = tuple(_LIBRARIES)  # tried in this order when APTUNE_ALLOCATOR is unset
CHOICES = (*PREFERRED, "glibc")
_FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
_REEXEC_MARK = "APTUNE_ALLOCATOR_SET"  # set in the re-executed process: never a second time


def current() -> str:
    """The allocator this process runs with: tcmalloc or jemalloc when its library is mapped, else glibc."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: the platform's own allocator
        return "system"
    for name in PREFERRED:
        if f"lib{name}" in maps:
            return name
    return "glibc"


def find_library(name: str) -> str | None:
    """The path of allocator ``name``'s shared library on this machine (None: not installed)."""
    folders = [os.environ.get("CONDA_PREFIX", "") + "/lib", *_FOLDERS]
    for library in _LIBRARIES[name]:
        for folder in folders:
            path = Path(folder) / library
            if path.is_file():
                return str(path)
    return None


def wanted() -> str:
    """The allocator ``APTUNE_ALLOCATOR`` asks for (empty: the best one found); a wrong name is an error."""
    choice = os.environ.get("APTUNE_ALLOCATOR", "").strip().lower()
    if choice and choice not in CHOICES:
        raise ValueError(f"APTUNE_ALLOCATOR={choice!r}: choose one of {', '.join(CHOICES)} (unset: tcmalloc, else "
                         "jemalloc, where installed)")
    return choice


def run_under_chosen_allocator(argv: list[str]) -> None:
    """For a command that trains (``train``, ``ablate``): re-execute this ``aptune`` process as ``python -m aptune
    ARGV`` with the chosen allocator preloaded, unless it already runs under it (or glibc is asked for); returns
    only when the process goes on as it is."""
    if not argv or argv[0] not in TRAINING_COMMANDS:
        return
    choice = wanted()
    if os.environ.get(_REEXEC_MARK) or not sys.platform.startswith("linux") or choice == "glibc":
        return
    names = [choice] if choice else list(PREFERRED)
    if current() in names:
        return
    library = next((path for path in map(find_library, names) if path), None)
    if library is None:
        print(f"[aptune] allocator: glibc ({' or '.join(names)} not found; it keeps memory that runs free: "
              "apt-get install libgoogle-perftools4)", file=sys.stderr)
        return
    env = {**os.environ, _REEXEC_MARK: "1",
           "LD_PRELOAD": " ".join(filter(None, [library, os.environ.get("LD_PRELOAD", "")]))}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "aptune", *argv], env)
