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

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes,
                "method": "bytes of parameters + gradients + optimizer state + activations saved for backward "
                          "(autograd saved-tensor hooks), at the step where their sum peaks"}


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

    def record(self, step: int, saved: SavedActivations, optimizer) -> StepMemory:
        now = StepMemory(step, parameter_bytes(*self.modules), gradient_bytes(*self.modules),
                         optimizer_bytes(optimizer), saved.bytes)
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
