"""``APTLinear``: a frozen linear map plus a low-rank adapter whose input, output and rank can change.

    y = (W + s·B·A) x + b,   W: (d_out, d_in) frozen,  A: (r, d_in),  B: (d_out, r),  s constant.

W may be bfloat16 or float16 (a base loaded in low precision); A and B are then float32, the master weights
the optimizer updates, as in mixed-precision LoRA training.

Pruning an input or output dimension slices W, b, A's columns or B's rows (docs/method.md §A). Growing the
rank appends random rows to A and zero columns to B, so the output does not change; the scaling ``s`` is
kept (the official code rescales alpha with r to the same effect). Every prunable linear of a model is an
``APTLinear``; the ones without an adapter simply have rank 0, so one slicing code path serves all.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class APTLinear(nn.Module):
    """A frozen ``nn.Linear`` with an optional trainable low-rank adapter.

    Args:
        base: the pretrained linear layer; its weight and bias are reused (not copied).
        rank: initial adapter rank (0 = no adapter).
        scaling: the constant ``s`` in ``W + s·B·A``.
    """

    def __init__(self, base: nn.Linear, rank: int = 0, scaling: float = 2.0):
        super().__init__()
        if rank < 0:
            raise ValueError(f"adapter rank must be >= 0, got {rank}")
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scaling = float(scaling)
        # a bfloat16/float16 base still gets float32 adapters: they are the master weights AdamW updates
        factory = {"device": self.weight.device, "dtype": torch.promote_types(self.weight.dtype, torch.float32)}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        _kaiming_rows_(self.lora_A.data)
        # Frozen copy of the adapter for the self-distillation teacher (shares W and b with the student).
        self.register_buffer("teacher_A", None, persistent=False)
        self.register_buffer("teacher_B", None, persistent=False)
        self.use_teacher = False
        # When a list, every Parameter replacement is appended to it (see ``_record``); the optimizer
        # surgery (aptune.tuning.optim_surgery) sets it to carry AdamW moments over to the new tensors.
        self.surgery_log: list | None = None

    # ----------------------------------------------------------------------------------------- shapes
    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"scaling={self.scaling}, bias={self.bias is not None}"
        )

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.use_teacher and self.teacher_A is not None:
            A, B = self.teacher_A, self.teacher_B
        else:
            A, B = self.lora_A, self.lora_B
        if A.shape[0] > 0 and A.shape[1] > 0 and B.shape[0] > 0:
            if x.dtype == A.dtype or torch.is_autocast_enabled(x.device.type):  # autocast casts (and saves) x once
                out = out + self.scaling * F.linear(F.linear(x, A), B)
            else:  # a low-precision base outside autocast: the adapter path in the adapter's dtype
                out = out + (self.scaling * F.linear(F.linear(x.to(A.dtype), A), B)).to(out.dtype)
        return out

    def delta_weight(self) -> torch.Tensor:
        """``s·B·A``, the adapter's contribution to the weight (d_out, d_in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    # ---------------------------------------------------------------------------------------- slicing
    def prune_inputs(self, keep: torch.Tensor) -> None:
        """Keep only the input dimensions ``keep`` (1-D index tensor): columns of W and A."""
        keep = keep.to(self.weight.device)
        old_weight, old_A = self.weight, self.lora_A
        self.weight = _sliced(self.weight, 1, keep)
        self.lora_A = _sliced(self.lora_A, 1, keep)
        self._record(old_weight, self.weight, 1, keep)
        self._record(old_A, self.lora_A, 1, keep)
        if self.teacher_A is not None:
            self.teacher_A = self.teacher_A.index_select(1, keep)

    def prune_outputs(self, keep: torch.Tensor) -> None:
        """Keep only the output dimensions ``keep``: rows of W, entries of b, rows of B."""
        keep = keep.to(self.weight.device)
        old_weight, old_bias, old_B = self.weight, self.bias, self.lora_B
        self.weight = _sliced(self.weight, 0, keep)
        if self.bias is not None:
            self.bias = _sliced(self.bias, 0, keep)
            self._record(old_bias, self.bias, 0, keep)
        self.lora_B = _sliced(self.lora_B, 0, keep)
        self._record(old_weight, self.weight, 0, keep)
        self._record(old_B, self.lora_B, 0, keep)
        if self.teacher_B is not None:
            self.teacher_B = self.teacher_B.index_select(0, keep)

    # ------------------------------------------------------------------------------------ rank growth
    def grow_rank(self, new_rank: int, generator: torch.Generator | None = None) -> None:
        """Raise the rank to ``new_rank``: new A rows random (kaiming-uniform), new B columns zero.

        The product B·A, and so the layer's output, is unchanged.
        """
        if new_rank < self.rank:
            raise ValueError(f"grow_rank cannot shrink the rank ({self.rank} -> {new_rank})")
        extra = new_rank - self.rank
        if extra == 0:
            return
        new_A = torch.empty(extra, self.in_features, dtype=self.lora_A.dtype, device=self.lora_A.device)
        _kaiming_rows_(new_A, generator)
        new_B = torch.zeros(self.out_features, extra, dtype=self.lora_B.dtype, device=self.lora_B.device)
        old_A, old_B = self.lora_A, self.lora_B
        self.lora_A = nn.Parameter(torch.cat([self.lora_A.data, new_A], 0), self.lora_A.requires_grad)
        self.lora_B = nn.Parameter(torch.cat([self.lora_B.data, new_B], 1), self.lora_B.requires_grad)
        self._record(old_A, self.lora_A, 0, None)
        self._record(old_B, self.lora_B, 1, None)

    def _record(self, old: torch.Tensor, new: torch.Tensor, dim: int, keep: torch.Tensor | None) -> None:
        """Log that Parameter ``old`` was replaced by ``new``: sliced to ``keep`` along ``dim``, or grown
        along ``dim`` (``keep`` None: old entries first, new ones appended). No-op unless a recorder
        listens (``surgery_log`` is a list)."""
        if self.surgery_log is not None:
            self.surgery_log.append((old, new, dim, keep))

    # -------------------------------------------------------------------------------- teacher / merge
    def snapshot_teacher(self) -> None:
        """Store a frozen copy of A and B; ``use_teacher = True`` makes the forward use it."""
        self.teacher_A = self.lora_A.detach().clone()
        self.teacher_B = self.lora_B.detach().clone()

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (W + s·B·A, b)."""
        weight = self.weight.detach().clone()
        if self.rank > 0:
            weight += self.delta_weight().to(weight.dtype)
        bias = None if self.bias is None else self.bias.detach().clone()
        return plain_linear(weight, bias)

    def rank_score(self) -> torch.Tensor:
        """Per-rank importance |Σ_j A_kj·∂L/∂A_kj| (docs/method.md §C); zeros before any backward."""
        if self.lora_A.grad is None:
            return torch.zeros(self.rank, device=self.lora_A.device)
        return (self.lora_A.detach() * self.lora_A.grad).sum(1).abs()


def plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding exactly these tensors (no random init, which also warns on 0-size shapes)."""
    linear = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(linear)
    linear.in_features, linear.out_features = weight.shape[1], weight.shape[0]
    linear.weight = nn.Parameter(weight, requires_grad=False)
    linear.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
    return linear


def _sliced(param: torch.Tensor, dim: int, keep: torch.Tensor) -> nn.Parameter:
    """A new Parameter holding ``param`` restricted to ``keep`` along ``dim``, same requires_grad."""
    return nn.Parameter(param.data.index_select(dim, keep).contiguous(), requires_grad=param.requires_grad)


def _kaiming_rows_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """LoRA's A initialisation: kaiming-uniform with a=√5, i.e. U(±1/√d_in)."""
    if tensor.numel() == 0:
        return
    bound = 1.0 / math.sqrt(tensor.shape[1])
    with torch.no_grad():
        if generator is not None and generator.device.type != tensor.device.type:
            # the run's generator is a CPU one: draw there (the same rows on every device), then copy over
            tensor.copy_(torch.empty(tensor.shape, dtype=tensor.dtype).uniform_(-bound, bound, generator=generator))
        else:
            tensor.uniform_(-bound, bound, generator=generator)
