"""Soft masks over the prunable structures, and how they enter a stock model.

``StructureState`` holds one mask per attention site (one entry per KV group), one per FFN site (one per
neuron) and one hidden mask shared by the whole model, each sized to the model's *current* physical
shape, plus the original indices of what is still there (so masks, records and exports always refer to
the pretrained model's numbering).

Masks enter through hooks on stock modules, never through edited modeling code (docs/method.md §B):

* head mask: multiplies each group's slice of the output projection's input (the per-head context);
* neuron mask: multiplies the down projection's input (the FFN activations);
* hidden mask: multiplies what enters the residual stream (embeddings, o and down outputs), and the
  norms, replaced by :class:`MaskedNorm`, compute their statistics over kept dimensions only.

With binary masks this is exactly the physically pruned model (tests/test_core_invariants.py).
"""

from __future__ import annotations

import torch
from torch import nn

from aptune.families.base import ModelFamily


class StructureState:
    """Masks and surviving original indices for every prunable structure of one model."""

    def __init__(self, family: ModelFamily):
        self.heads: dict[str, torch.Tensor] = {}
        self.ffn: dict[str, torch.Tensor] = {}
        self.head_index: dict[str, torch.Tensor] = {}
        self.ffn_index: dict[str, torch.Tensor] = {}
        for site in family.attention_sites:
            groups = family.model.get_submodule(site.k).weight.shape[0] // site.head_dim
            self.heads[site.name] = torch.ones(groups)
            self.head_index[site.name] = torch.arange(groups)
        for site in family.ffn_sites:
            neurons = family.model.get_submodule(site.down).weight.shape[1]
            self.ffn[site.name] = torch.ones(neurons)
            self.ffn_index[site.name] = torch.arange(neurons)
        self.hidden = torch.ones(family.hidden_size)
        self.hidden_index = torch.arange(family.hidden_size)
        self.group_size = {site.name: site.group_size for site in family.attention_sites}
        self.head_dim = {site.name: site.head_dim for site in family.attention_sites}
        self.original_sizes = self.sizes()  # the pretrained model's sizes, for records of what was cut

    # ------------------------------------------------------------------------------------ queries
    def sizes(self) -> dict:
        """Current physical sizes: groups per attention site, neurons per FFN site, hidden size."""
        return {
            "heads": {name: len(mask) for name, mask in self.heads.items()},
            "ffn": {name: len(mask) for name, mask in self.ffn.items()},
            "hidden": len(self.hidden),
        }

    def kept_sizes(self) -> dict:
        """Sizes after dropping every zero mask entry."""
        return {
            "heads": {name: int((mask > 0).sum()) for name, mask in self.heads.items()},
            "ffn": {name: int((mask > 0).sum()) for name, mask in self.ffn.items()},
            "hidden": int((self.hidden > 0).sum()),
        }

    def is_binary(self) -> bool:
        masks = list(self.heads.values()) + list(self.ffn.values()) + [self.hidden]
        return all(bool(((m == 0) | (m == 1)).all()) for m in masks)

    # ------------------------------------------------------------------------------------ setting
    def set_masks(self, heads: dict | None = None, ffn: dict | None = None, hidden=None) -> None:
        """Replace masks; each must match the current shape and lie in [0, 1]."""
        for kind, given, current in (("heads", heads, self.heads), ("ffn", ffn, self.ffn)):
            for name, mask in (given or {}).items():
                if name not in current:
                    raise ValueError(f"unknown {kind} site {name!r}; known sites: {', '.join(current)}")
                current[name] = _checked_mask(mask, len(current[name]), f"{kind} mask of {name!r}")
        if hidden is not None:
            self.hidden = _checked_mask(hidden, len(self.hidden), "hidden mask")

    def keep_masks(self) -> dict:
        """The masks as kept/pruned booleans keyed by original index (for records and Jaccard overlaps)."""
        return {
            "heads": {n: self.head_index[n][m > 0].tolist() for n, m in self.heads.items()},
            "ffn": {n: self.ffn_index[n][m > 0].tolist() for n, m in self.ffn.items()},
            "hidden": self.hidden_index[self.hidden > 0].tolist(),
        }

    # ---------------------------------------------------------------------------- serialisation
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors."""
        out = {"hidden": self.hidden, "hidden_index": self.hidden_index}
        for name in self.heads:
            out[f"heads/{name}"] = self.heads[name]
            out[f"head_index/{name}"] = self.head_index[name]
        for name in self.ffn:
            out[f"ffn/{name}"] = self.ffn[name]
            out[f"ffn_index/{name}"] = self.ffn_index[name]
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load masks and indices saved by :meth:`state_dict` (the model must already have that shape)."""
        self.hidden, self.hidden_index = tensors["hidden"].float(), tensors["hidden_index"].long()
        for name in self.heads:
            self.heads[name] = tensors[f"heads/{name}"].float()
            self.head_index[name] = tensors[f"head_index/{name}"].long()
        for name in self.ffn:
            self.ffn[name] = tensors[f"ffn/{name}"].float()
            self.ffn_index[name] = tensors[f"ffn_index/{name}"].long()


def _checked_mask(mask, size: int, what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask, dtype=torch.float32).detach().cpu()
    if mask.dim() != 1 or mask.shape[0] != size:
        raise ValueError(f"{what} has shape {tuple(mask.shape)}; expected ({size},)")
    if bool(((mask < 0) | (mask > 1)).any()) or not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{what} must lie in [0, 1]; got values from {mask.min():.3g} to {mask.max():.3g}")
    return mask


# ------------------------------------------------------------------------------------- masked norms


class MaskedNorm(nn.Module):
    """A LayerNorm / RMSNorm that normalises over the kept hidden dimensions only, then applies the mask.

    It reuses the wrapped norm's parameters (same names, so state-dict keys do not change). With an
    all-ones mask it computes exactly what the stock norm computes.
    """

    def __init__(self, norm: nn.Module, state: StructureState, kind: str):
        super().__init__()
        self.weight = norm.weight
        self.bias = getattr(norm, "bias", None)
        self.eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6)
        self.kind = kind
        object.__setattr__(self, "state", state)  # shared, not a submodule
        object.__setattr__(self, "original", norm)  # put back on export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.state.hidden.to(device=x.device)
        if bool((mask == 1).all()):
            return self._dense(x)
        keep = (mask > 0).to(torch.float32)
        count = keep.sum().clamp_min(1.0)
        xf = x.to(torch.float32)
        if self.kind == "layernorm":
            mean = (xf * keep).sum(-1, keepdim=True) / count
            centred = (xf - mean) * keep
            var = centred.pow(2).sum(-1, keepdim=True) / count
            out = centred * torch.rsqrt(var + self.eps)
            out = out.to(x.dtype) * self.weight
            if self.bias is not None:
                out = out + self.bias
        else:  # RMS norm (LLaMA, T5): no centring, statistics in float32
            var = (xf.pow(2) * keep).sum(-1, keepdim=True) / count
            out = self.weight * (xf * torch.rsqrt(var + self.eps)).to(x.dtype)
        return out * mask.to(out.dtype)

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        """The stock computation (all dimensions kept)."""
        if self.kind == "layernorm":
            return nn.functional.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        if x.dtype in (torch.bfloat16, torch.float16):
            return LowPrecisionRMSNorm.apply(x, self.weight, self.eps)
        xf = x.to(torch.float32)
        var = xf.pow(2).mean(-1, keepdim=True)
        return self.weight * (xf * torch.rsqrt(var + self.eps)).to(x.dtype)

    def unwrap(self) -> nn.Module:
        """The stock norm module, with this module's (possibly cut) parameters."""
        norm = self.original
        norm.weight = self.weight
        if self.bias is not None:
            norm.bias = self.bias
        if hasattr(norm, "normalized_shape"):
            norm.normalized_shape = (self.weight.shape[0],)
        return norm


class LowPrecisionRMSNorm(torch.autograd.Function):
    """RMS norm of a bfloat16/float16 input with float32 statistics, as transformers computes it, keeping only
    the input (in its own dtype) and the per-token 1/rms for backward, where autograd would keep a float32 copy
    of the input (twice the bytes, in every norm of every layer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.to(torch.float32)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        normed = x.to(torch.float32) * rstd
        grad_normed = (grad_out * weight).to(torch.float32)
        # d/dx of x·rstd(x): rstd·(g − x̂·mean(g·x̂)) with x̂ = x·rstd
        grad_x = rstd * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_out * normed.to(x.dtype)).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        return grad_x.to(x.dtype), grad_weight, None


# --------------------------------------------------------------------------------------- mask hooks


class MaskHooks:
    """Registers the forward hooks that apply a :class:`StructureState` to a model."""

    def __init__(self, family: ModelFamily, state: StructureState):
        self.family = family
        self.state = state
        self.handles: list = []

    def attach(self) -> None:
        model, state = self.family.model, self.state
        for site in self.family.attention_sites:
            o = model.get_submodule(site.o)
            self.handles.append(o.register_forward_pre_hook(_head_mask_hook(state, site.name)))
        for site in self.family.ffn_sites:
            down = model.get_submodule(site.down)
            self.handles.append(down.register_forward_pre_hook(_ffn_mask_hook(state, site.name)))
        for path in self.family.hidden.stream_inputs:
            module = model.get_submodule(path)
            self.handles.append(module.register_forward_hook(_hidden_mask_hook(state)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _head_mask_hook(state: StructureState, site: str):
    def hook(module, args):
        mask = state.heads[site]
        if bool((mask == 1).all()):
            return None
        (x,) = args
        width = state.group_size[site] * state.head_dim[site]
        scale = mask.to(device=x.device, dtype=x.dtype).repeat_interleave(width)
        return (x * scale,)

    return hook


def _ffn_mask_hook(state: StructureState, site: str):
    def hook(module, args):
        mask = state.ffn[site]
        if bool((mask == 1).all()):
            return None
        (x,) = args
        return (x * mask.to(device=x.device, dtype=x.dtype),)

    return hook


def _hidden_mask_hook(state: StructureState):
    def hook(module, args, output):
        mask = state.hidden
        if bool((mask == 1).all()):
            return None
        return output * mask.to(device=output.device, dtype=output.dtype)

    return hook
