"""Where a number came from: the commit (and whether the tree had uncommitted changes), the library versions and
the machine. Ablation results, training summaries and benchmark JSONs carry it, so a reader can reproduce a
number or discount it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

from aptune import allocator


def _git_sha(folder: Path) -> tuple[str, bool | None]:
    """The commit of the checkout ``folder`` lies in and whether it has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if sha.returncode != 0:
            return "unknown", None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_names() -> list[str]:
    # nvidia-smi rather than torch: the runner itself never imports torch (it only orchestrates)
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        return []


def meta_info() -> dict:
    """Versions, commit and machine: what a reader needs to reproduce or discount a number."""
    sha, dirty = _git_sha(Path(__file__).resolve().parent)  # the aptune package folder
    return {
        "aptune_git_sha": sha, "aptune_git_dirty": dirty,
        "versions": {"aptune": _version("aptune"), "torch": _version("torch"),
                     "transformers": _version("transformers"), "accelerate": _version("accelerate")},
        "python": platform.python_version(), "platform": platform.platform(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "gpus": _gpu_names(), "allocator": allocator.current(),
    }
