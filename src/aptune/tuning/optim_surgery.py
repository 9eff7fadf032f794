"""Keep AdamW (and its LR schedule) going across structural changes.

Physical pruning and rank growth replace Parameters with new, differently shaped ones. The official code
rebuilds AdamW from scratch each time (moments lost) and forgets to re-bind the LR scheduler
(docs/method.md §E, pitfalls J6, J15). Here the *existing* optimizer is mutated in place: the new
Parameters take the old ones' places in ``param_groups``, and their AdamW state is carried over:

* a cut along ``dim`` to indices ``keep``: every state tensor shaped like the old parameter
  (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) is ``index_select``-ed; ``step`` is kept;
* a growth along ``dim``: old values first, zeros for the new slots (docs/design.md); ``step`` is kept.

Because the optimizer object and its ``param_groups`` dicts stay the same, a ``LambdaLR`` (or any
scheduler) built on it keeps working with no re-binding. ``mode="reset"`` reproduces the paper instead:
all moments (of every parameter) are dropped, while the LR schedule still continues.

Typical use, with the slicing information recorded by ``APTLinear`` itself::

    with OptimizerSurgery(optimizer, apt_model, layer_transform, mode="carry"):
        apt_model.prune()
        grow_ranks(apt_model, importance.scores(), budget)
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from aptune.adapters.layer import APTLinear

MODES = ("carry", "reset")


def unwrap_optimizer(optimizer):
    """The ``torch.optim.Optimizer`` inside wrappers such as Accelerate's ``AcceleratedOptimizer``."""
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


# ------------------------------------------------------------------------------ state transforms


def _cut(dim: int, keep: torch.Tensor):
    def apply(value: torch.Tensor, old_shape: torch.Size) -> torch.Tensor:
        return value.index_select(dim, keep.to(value.device)).contiguous()

    return apply


def _grow(dim: int, new_size: int):
    def apply(value: torch.Tensor, old_shape: torch.Size) -> torch.Tensor:
        pad_shape = list(value.shape)
        pad_shape[dim] = new_size - value.shape[dim]
        return torch.cat([value, value.new_zeros(pad_shape)], dim)

    return apply


def _transformed_state(state: dict, old: torch.Tensor, transforms: list) -> dict:
    """Apply (shape-before, transform) steps to every state tensor shaped like the parameter."""
    out = dict(state)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape != old.shape:
            continue  # 'step' and other scalars are carried as they are
        for shape_before, transform in transforms:
            value = transform(value, shape_before)
        out[key] = value
    return out


def _replace(optimizer, old: nn.Parameter, new: nn.Parameter | None, transforms: list | None, reset: bool) -> bool:
    """Put ``new`` where ``old`` was (drop it when ``new`` is None); move or drop its state."""
    opt = unwrap_optimizer(optimizer)
    found = False
    for group in opt.param_groups:
        for i, param in enumerate(group["params"]):
            if param is old:
                found = True
                if new is None:
                    del group["params"][i]
                else:
                    group["params"][i] = new
                break
        if found:
            break
    state = opt.state.pop(old, None)
    if found and new is not None and state and not reset and transforms is not None:
        opt.state[new] = _transformed_state(state, old, transforms)
    return found


def carry_over_cut(optimizer, old: nn.Parameter, new: nn.Parameter, dim: int, keep: torch.Tensor) -> None:
    """``new`` = ``old`` restricted to ``keep`` along ``dim``: swap it in, slice its AdamW moments."""
    _replace(optimizer, old, new, [(old.shape, _cut(dim, torch.as_tensor(keep)))], reset=False)


def carry_over_growth(optimizer, old: nn.Parameter, new: nn.Parameter, dim: int) -> None:
    """``new`` = ``old`` with slots appended along ``dim``: swap it in, zero moments for the new slots."""
    _replace(optimizer, old, new, [(old.shape, _grow(dim, new.shape[dim]))], reset=False)


def reset_optimizer_state(optimizer) -> None:
    """Drop every parameter's state (moments and step counts); param groups and LR are untouched."""
    unwrap_optimizer(optimizer).state.clear()


# ------------------------------------------------------------------------------------ the context


class OptimizerSurgery:
    """Context manager: structural changes inside it are reflected in the optimizer on exit.

    On entry it records every parameter of ``modules`` by name and asks every ``APTLinear`` among them
    to log its Parameter replacements (``APTLinear.surgery_log``). On exit, for every parameter the
    optimizer holds:

    * replaced by ``APTLinear`` (cut or growth, possibly several times): follow the chain, transform
      the state accordingly;
    * replaced elsewhere (embeddings and norms cut by hidden-dimension pruning when the whole model
      trains): if exactly the hidden size changed, slice by the surviving hidden dimensions
      (``apt_model.state.hidden_index``); otherwise the state of that parameter restarts (warning);
    * gone from the model (a q/k/v of an attention block left with no head): removed.

    Parameters that become trainable inside the context are not added (the caller owns the groups).

    Args:
        optimizer: a ``torch.optim.Optimizer`` (or a wrapper exposing ``.optimizer``).
        modules: the modules whose parameters may change (the APTModel, the layer transform, ...).
        mode: "carry" (moments follow the survivors, docs/design.md) or "reset" (all state dropped, paper).
    """

    def __init__(self, optimizer, *modules: nn.Module, mode: str = "carry"):
        if mode not in MODES:
            raise ValueError(f"unknown optimizer surgery mode {mode!r}; choose from {', '.join(MODES)}")
        self.optimizer = optimizer
        self.modules = modules
        self.mode = mode
        self.changed: list[str] = []  # names of the parameters that were replaced (for logs)

    def _named(self) -> dict[str, nn.Parameter]:
        named = {}
        for i, module in enumerate(self.modules):
            for name, param in module.named_parameters(remove_duplicate=False):
                named[f"{i}:{name}"] = param
        return named

    def _linears(self) -> list[APTLinear]:
        seen, out = set(), []
        for module in self.modules:
            for sub in module.modules():
                if isinstance(sub, APTLinear) and id(sub) not in seen:
                    seen.add(id(sub))
                    out.append(sub)
        return out

    def __enter__(self) -> "OptimizerSurgery":
        self._before = self._named()
        self._log: list = []
        self._linear_list = self._linears()
        for linear in self._linear_list:
            linear.surgery_log = self._log
        states = [getattr(m, "state", None) for m in self.modules]
        self._state = next((s for s in states if hasattr(s, "hidden_index")), None)
        self._hidden_before = None if self._state is None else self._state.hidden_index.clone()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        for linear in self._linear_list:
            linear.surgery_log = None
        if exc_type is not None:
            return False
        self._apply()
        return False

    def _apply(self) -> None:
        opt = unwrap_optimizer(self.optimizer)
        chain = {id(old): (old, new, dim, keep) for old, new, dim, keep in self._log}
        after = self._named()
        alive = {id(p) for p in after.values()}
        name_of = {id(p): name for name, p in self._before.items()}
        reset = self.mode == "reset"
        for group in opt.param_groups:
            for param in list(group["params"]):
                name = name_of.get(id(param))
                if name is None:
                    continue  # not ours
                current, transforms = param, []
                while id(current) in chain:
                    old, new, dim, keep = chain[id(current)]
                    step = _cut(dim, keep) if keep is not None else _grow(dim, new.shape[dim])
                    transforms.append((old.shape, step))
                    current = new
                if current is param and name in after and after[name] is not param:
                    current = after[name]  # replaced outside APTLinear
                    transforms = self._infer(param, current, name)
                if id(current) not in alive:
                    _replace(opt, param, None, None, reset)
                    self.changed.append(name.split(":", 1)[1])
                elif current is not param:
                    _replace(opt, param, current, transforms, reset)
                    self.changed.append(name.split(":", 1)[1])
        if reset:
            reset_optimizer_state(opt)

    def _infer(self, old: torch.Tensor, new: torch.Tensor, name: str) -> list | None:
        """Transforms for a replacement nobody logged: a hidden-dimension cut, or nothing known."""
        if old.shape == new.shape:
            return []
        if self._state is not None and old.dim() == new.dim():
            before, after = self._hidden_before, self._state.hidden_index
            dims = [d for d in range(old.dim()) if old.shape[d] != new.shape[d]]
            if all(old.shape[d] == len(before) and new.shape[d] == len(after) for d in dims):
                keep = torch.nonzero(torch.isin(before, after), as_tuple=False).flatten()
                transforms, shape = [], old.shape
                for d in dims:
                    transforms.append((shape, _cut(d, keep)))
                return transforms
        warnings.warn(f"optimizer state of {name.split(':', 1)[1]} restarts: its shape changed "
                      f"{tuple(old.shape)} -> {tuple(new.shape)} in a way aptune cannot map")
        return None
