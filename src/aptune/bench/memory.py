"""Memory as a property of the model and the recipe: bytes of tensors, counted, not the process's RSS.

Two measures, both deterministic (the same model, inputs and recipe give the same number on any machine):

* **training memory** of a step: bytes of the parameters, their gradients, the optimizer state and the
  activations autograd saved for backward (counted as autograd packs them, through
  ``torch.autograd.graph.saved_tensors_hooks``; each storage once; tensors that are parameters are weights,
  not activations). :class:`TrainingMemory` keeps the step where the sum peaks, with its parts.
* **inference memory** of a forward pass: weight bytes plus the peak bytes of the tensors the pass holds at
  once (:func:`peak_forward_bytes`, which follows every tensor an operation creates until it is freed).

The process's RSS is reported beside these by the callers: it adds the interpreter, the libraries and the
allocator's slack, which at small model sizes dominate.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from aptune import allocator
from aptune.bench.process import file_backed_ranges, heap_in_use, reading, rss_now


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared and tied tensors count once)."""
    return sum(nbytes for _, nbytes in {_storage_key(t) for t in tensors if t is not None})


def parameter_bytes(*modules: nn.Module) -> int:
    return tensor_bytes(p for m in modules for p in m.parameters())


def gradient_bytes(*modules: nn.Module) -> int:
    return tensor_bytes(p.grad for m in modules for p in m.parameters())


def optimizer_bytes(optimizer) -> int:
    """Bytes of the optimizer's state tensors (AdamW: the two moments; the step counters too)."""
    return tensor_bytes(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


class SavedActivations:
    """Counts the bytes autograd saves for backward inside :meth:`watch` (parameters excluded)."""

    def __init__(self, *modules: nn.Module):
        self._weights = {_storage_key(p)[0] for m in modules for p in m.parameters()}
        self._seen: set[int] = set()
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        pointer, nbytes = _storage_key(tensor)
        if pointer not in self._weights and pointer not in self._seen:
            self._seen.add(pointer)
            self.bytes += nbytes
        # Detached, not as is: autograd saves a node's own output without a reference back to the node, but a
        # packed tensor is kept as given, and the output's grad_fn would then hold itself through C++, a cycle
        # Python's collector cannot see. Every branch a backward never reaches (the KV cache a decoder builds
        # in training, say) then stayed alive for good: SmolLM2 grew by ~70 MiB a step. Same storage, same values.
        return tensor.detach()

    @contextmanager
    def watch(self):
        """Count what the forward passes run inside this block save for backward (the tensors are kept as
        they are: nothing about the computation changes)."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self


@dataclass
class StepMemory:
    step: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    held_bytes: int = 0  # the method's other tensors: the teacher's snapshot, the salience statistics

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes + self.held_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes,
                "method": "bytes of parameters + gradients + optimizer state + activations saved for backward "
                          "(autograd saved-tensor hooks) + the method's other tensors (teacher, salience), at the "
                          "step where their sum peaks"}


class TrainingMemory:
    """The peak over a run's steps of parameters + gradients + optimizer state + saved activations.

    Per step: ``with memory.watch() as saved:`` around the forward, then, after the optimizer step,
    ``memory.record(step, saved, optimizer, *modules)``. Gradients are counted as the optimizer step leaves
    them (before ``zero_grad``): the trainable tensors' gradients coexist with the saved activations while
    backward runs, so the sum bounds the step's peak from above by at most the gradients already freed."""

    def __init__(self, *modules: nn.Module):
        self.modules = modules
        self.peak: StepMemory | None = None

    def watch(self):
        return SavedActivations(*self.modules).watch()

    def record(self, step: int, saved: SavedActivations, optimizer, held_bytes: int = 0) -> StepMemory:
        now = StepMemory(step, parameter_bytes(*self.modules), gradient_bytes(*self.modules),
                         optimizer_bytes(optimizer), saved.bytes, held_bytes)
        if self.peak is None or now.total_bytes > self.peak.total_bytes:
            self.peak = now
        return now


# ------------------------------------------------------------------------------------------ inference


class _LiveTensors(TorchDispatchMode):
    """Follows every storage an operation returns until the last tensor holding it is freed."""

    def __init__(self, ignore: set[int]):
        super().__init__()
        self.ignore = ignore  # storages that exist before the pass (weights, inputs)
        self.holders: dict[int, int] = {}  # storage -> live tensors holding it
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._hold(tensor)
        return out

    def _hold(self, tensor: torch.Tensor) -> None:
        pointer, nbytes = _storage_key(tensor)
        if pointer in self.ignore or nbytes == 0:
            return
        if pointer not in self.holders:
            self.holders[pointer], self.sizes[pointer] = 0, nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        self.holders[pointer] += 1
        weakref.finalize(tensor, self._release, pointer)

    def _release(self, pointer: int) -> None:
        self.holders[pointer] -= 1
        if self.holders[pointer] == 0:
            del self.holders[pointer]
            self.current -= self.sizes.pop(pointer)


def peak_forward_bytes(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Peak bytes of the tensors one ``inference_mode`` forward pass of ``model`` holds at once (weights and
    inputs excluded; the returned output included while it is alive inside the pass)."""
    existing = {_storage_key(t)[0] for t in [*model.parameters(), *model.buffers(), *inputs.values()]}
    tracker = _LiveTensors(existing)
    with torch.inference_mode(), tracker:
        out = model(**inputs)
    peak = tracker.peak
    del out
    return peak


# ------------------------------------------------------------------------- the process, at its peak


def tensors_within(obj, depth: int = 4) -> list[torch.Tensor]:
    """Tensors an object holds in its attributes, dicts, lists and tuples (``depth`` levels down); modules and
    the objects they lead to are not followed (a scorer refers back to the model it scores)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth == 0 or isinstance(obj, nn.Module) or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return []
    if isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        children = obj
    else:
        children = getattr(obj, "__dict__", {}).values()
    return [t for child in children for t in tensors_within(child, depth - 1)]


def tensor_census(groups: dict[str, list[torch.Tensor]]) -> dict[str, int]:
    """Bytes per group of the distinct storages behind its tensors; a storage counts once, in the first group that
    holds it (so a teacher sharing the backbone's weights adds only its own tensors)."""
    return {name: sum(nbytes for _, nbytes in mine) for name, mine in _distinct_storages(groups).items()}


def _distinct_storages(groups: dict[str, list[torch.Tensor]]) -> dict[str, set[tuple[int, int]]]:
    seen: set[int] = set()
    out = {}
    for name, tensors in groups.items():
        mine = {_storage_key(t) for t in tensors if t is not None and t.untyped_storage().nbytes() > 0}
        out[name] = {(pointer, nbytes) for pointer, nbytes in mine if pointer not in seen}
        seen |= {pointer for pointer, _ in mine}
    return out


def bytes_in_ranges(storages, ranges: list[tuple[int, int]]) -> int:
    """Bytes of the ``(pointer, nbytes)`` storages that lie in one of the address ``ranges``."""
    return sum(nbytes for pointer, nbytes in storages if any(start <= pointer < end for start, end in ranges))


class PeakBreakdown:
    """Where the process's bytes are at its highest RSS: every tensor the run holds, by holder, beside what the
    kernel and the allocator report (:func:`aptune.bench.process.reading`), so that the parts add up to the RSS.

    :meth:`sample` reads the RSS and the allocator's bytes in use (microseconds); when either is above every earlier
    sample it takes the full reading. Two are kept: ``peak``, at the highest RSS, and ``busiest``, at the most heap
    in use (the tensors the peak was built for: the RSS keeps what they freed). The rows: tensors by holder
    (``holders()`` names them; saved activations as :class:`SavedActivations` counted them; the part of them that
    lies in mapped files, such as weights still in a safetensors checkpoint's mmap, is ``tensors_in_mapped_files``
    and is part of ``mapped_files``, not of the heap), then
    ``other_heap_in_use`` (allocated, not a tensor counted here: the interpreter's objects, the data, the
    libraries' own heap), ``heap_free_held`` (heap the allocator holds from the system but has not handed out),
    ``other_anonymous`` (outside the heap: Python's object arenas, thread stacks) and ``mapped_files`` (the
    libraries' code and data, mmapped files).
    ``stages`` keeps readings taken as the run is built (at the start, after the data, after the model).
    """

    def __init__(self, holders):
        self.holders = holders  # () -> {name: [tensors]}, in the order a shared storage is attributed
        self.peak: dict | None = None
        self.busiest: dict | None = None
        self.stages: dict[str, dict] = {}

    def stage(self, name: str) -> None:
        self.stages[name] = reading()

    def sample(self, step: int, where: str, activations: int = 0) -> None:
        rss, in_use = rss_now(), heap_in_use()
        higher = rss is not None and (self.peak is None or rss > self.peak["rss"])
        busier = in_use is not None and (self.busiest is None or in_use > self.busiest["heap_in_use"])
        if higher or busier:
            now = self._full_reading(step, where, activations)
            self.peak = now if higher else self.peak
            self.busiest = now if busier else self.busiest

    def _full_reading(self, step: int, where: str, activations: int) -> dict:
        process = reading()
        storages = _distinct_storages(self.holders())
        tensors = {**{name: sum(n for _, n in mine) for name, mine in storages.items()}, "activations": activations}
        counted = sum(tensors.values())
        # weights still in the checkpoint's mmap are mapped-file pages, not heap (a cut's copies are heap)
        mapped = bytes_in_ranges({s for mine in storages.values() for s in mine}, file_backed_ranges())
        in_use = process["heap_in_use"]
        return {"step": step, "where": where, "rss": process["rss"], "heap_in_use": in_use, "tensors": tensors,
                "tensors_total": counted, "tensors_in_mapped_files": mapped,
                "other_heap_in_use": None if in_use is None else in_use - (counted - mapped),
                "heap_free_held": process["heap_free_held"], "other_anonymous": process["other_anonymous"],
                "mapped_files": process["files"]}

    def as_dict(self) -> dict | None:
        if self.peak is None:
            return None
        return {"allocator": allocator.current(), "peak": self.peak, "busiest": self.busiest, "stages": self.stages,
                "method": "samples after each forward, backward, evaluation and pruning step; at the highest RSS "
                          "(peak) and the most heap in use (busiest): tensors counted by holder; the allocator's "
                          "bytes in use less them; the allocator's bytes from the system less those in use; "
                          "anonymous memory less the allocator's bytes; file-backed RSS (/proc/self/smaps_rollup)"}


def breakdown_line(name: str, reading_: dict) -> str:
    """One line of a :class:`PeakBreakdown` reading, in MiB: ``name at step N (where): tensors ... = RSS``."""
    mib = lambda n: "n/a" if n is None else f"{n / 2**20:,.0f}"  # noqa: E731
    parts = ", ".join(f"{k} {mib(v)}" for k, v in reading_["tensors"].items() if v)
    mapped = reading_["tensors_in_mapped_files"]
    return (f"{name} at step {reading_['step']} ({reading_['where']}): RSS {mib(reading_['rss'])} MiB = tensors "
            f"{mib(reading_['tensors_total'] - mapped)} in the heap ({parts}; {mib(mapped)} of them mapped from the "
            f"checkpoint, counted under mapped files) + other heap in use {mib(reading_['other_heap_in_use'])} + free "
            f"heap held {mib(reading_['heap_free_held'])} + other anonymous {mib(reading_['other_anonymous'])} + "
            f"mapped files {mib(reading_['mapped_files'])}")
