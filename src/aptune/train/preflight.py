"""What is checked before a run's first step, from the model's config alone (no weights read), so that a run that
cannot work is refused at once and leaves nothing written:

* the sequence length against the model's positions (a longer text would fail inside the embeddings);
* the memory: the planner's predicted peak (``aptune plan``) against the memory the device has, so that a run that
  cannot fit is refused instead of being stopped by the out-of-memory killer hours in.

The prediction counts tensors (weights, adapters, gradients, AdamW state, activations kept for backward, the
teacher) with every sequence at ``data.max_length``; the process itself (Python, the libraries, the allocator's
slack) comes on top. So a refused run cannot fit, while a run that passes may still need a little more than the
plan says; ``train.skip_memory_check=true`` starts it anyway (a plan that overestimates short instruction data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from aptune.bench.planner import load_model_config, plan_run
from aptune.config import RunConfig, override_config
from aptune.models import check_max_length, resolve_dtype

GIB = 2 ** 30


@dataclass(frozen=True)
class MemoryCheck:
    """What the check compared: the predicted peak of a training step and the memory there is for it."""

    needed: int  # bytes, the planner's peak over the run's phases (times the processes sharing the memory)
    available: int  # bytes: RAM the system can still give (CPU) or free memory of the GPU
    phase: str  # the phase of the peak (tuning, pruning, recovery)
    where: str  # "RAM" or "GPU memory"

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def line(self) -> str:
        return (f"memory check: the run needs {self.needed / GIB:.2f} GiB at its peak ({self.phase}), "
                f"{self.available / GIB:.2f} GiB of {self.where} is available")


def preflight(config: RunConfig, device: torch.device, processes: int = 1) -> list[str]:
    """Every check before the first step (a ValueError says what to change); returns the lines to print.
    ``processes``: the processes that share this device's memory."""
    model_config = load_model_config(config.model.name)
    check_max_length(model_config, config.data.max_length)
    if config.train.skip_memory_check:
        return ["memory check skipped (train.skip_memory_check=true)"]
    return [check_memory(config, device, processes, model_config).line()]


def check_memory(config: RunConfig, device: torch.device, processes: int = 1, model_config=None) -> MemoryCheck:
    """The run's predicted peak against the device's free memory; raises a ValueError (with the settings that
    would fit) when the peak does not fit."""
    model_config = model_config or load_model_config(config.model.name)
    available, where = available_memory(device)
    check = _compare(config, device, model_config, processes, available, where)
    if not check.fits:
        fixes = fitting_settings(config, device, model_config, processes, available)
        offer = (f"settings that fit: {'; '.join(fixes)}" if fixes else
                 "no smaller batch, gradient checkpointing or bfloat16 fits: use a machine with more memory")
        raise ValueError(f"{check.line()}: the run cannot fit ({_settings(config)}). {offer}; or set "
                         "train.skip_memory_check=true to start it anyway")
    return check


def available_memory(device: torch.device) -> tuple[int, str]:
    """Free bytes for a run on ``device``: free GPU memory, or the RAM the system can give without swapping."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "GPU memory"
    return _available_ram(), "RAM"


def _available_ram() -> int:
    """Linux's MemAvailable (free memory plus what the page cache can give back); elsewhere the free pages."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _compare(config: RunConfig, device: torch.device, model_config, processes: int, available: int,
             where: str) -> MemoryCheck:
    dtype = resolve_dtype(config.model.dtype, on_gpu=device.type == "cuda", full_precision=config.adapter.train_base)
    planned = plan_run(config, str(dtype).removeprefix("torch."), device.type, model_config)
    return MemoryCheck(planned["peak"].total * processes, available, planned["peak"].phase, where)


def fitting_settings(config: RunConfig, device: torch.device, model_config, processes: int,
                     available: int) -> list[str]:
    """The changes that bring the predicted peak under ``available``, each with what it needs: on its own, the
    largest smaller batch, gradient checkpointing, a bfloat16 base; when none fits alone, checkpointing and
    bfloat16 together with the largest batch that fits then."""
    def needed(changes: dict) -> int | None:
        changed = override_config(_copy(config), _tree(changes))
        check = _compare(changed, device, model_config, processes, available, "")
        return check.needed if check.fits else None

    def largest_batch(changes: dict) -> dict | None:
        sizes = [config.train.batch_size, *_smaller_batches(config.train.batch_size)]
        return next(({**changes, "train.batch_size": b} for b in sizes
                     if needed({**changes, "train.batch_size": b}) is not None), None)

    savers = {}  # what saves memory without changing the batch
    if not config.train.gradient_checkpointing:
        savers["train.gradient_checkpointing"] = True
    float32 = resolve_dtype(config.model.dtype, on_gpu=device.type == "cuda",
                            full_precision=config.adapter.train_base) == torch.float32
    if float32 and not config.adapter.train_base:  # full fine-tuning keeps float32 master weights
        savers["model.dtype"] = "bfloat16"
    alone = [largest_batch({}), *({key: value} for key, value in savers.items())]
    fits = [(changes, needed(changes)) for changes in alone if changes]
    lines = [f"{_words(changes)} ({n / GIB:.2f} GiB)" for changes, n in fits if n is not None]
    if not lines and len(savers) > 1 and (together := largest_batch(savers)):
        lines.append(f"{_words(together)} ({needed(together) / GIB:.2f} GiB)")
    return lines


def _smaller_batches(batch_size: int) -> list[int]:
    """Halvings of the batch, largest first, down to 1."""
    sizes, b = [], batch_size // 2
    while b >= 1:
        sizes.append(b)
        b //= 2
    return sizes


def _tree(changes: dict) -> dict:
    """``{"train.batch_size": 8}`` as the nested tree override_config takes."""
    tree: dict = {}
    for key, value in changes.items():
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = value
    return tree


def _words(changes: dict) -> str:
    return ", ".join(f"{key}={str(value).lower() if isinstance(value, bool) else value}"
                     for key, value in changes.items())


def _settings(config: RunConfig) -> str:
    return (f"model.dtype={config.model.dtype}, train.batch_size={config.train.batch_size}, data.max_length="
            f"{config.data.max_length}, train.gradient_checkpointing={str(config.train.gradient_checkpointing).lower()}")


def _copy(config: RunConfig) -> RunConfig:
    """A copy to change (override_config changes its argument in place)."""
    return replace(config, model=replace(config.model), train=replace(config.train))
