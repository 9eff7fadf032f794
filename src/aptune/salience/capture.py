"""Forward-hook plumbing of the scorers that observe activations (APT's and the weight-gradient one).

Such a scorer registers observers on some modules, reads the batch's padding masks from a pre-hook on the
whole model (so padding tokens can be left out of its sums), keeps the hook handles, and removes them all
on ``detach``. What the observers compute stays with each scorer.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from aptune.salience.base import BETA, Salience, token_mask_for


class ObservingSalience(Salience):
    """A scorer that observes the forward pass through hooks.

    Subclasses register their observers in :meth:`add_observers` (with :meth:`observe`) and find the
    padding mask matching an activation with :meth:`token_mask`.

    Args:
        beta: EMA factor (0.85).
        exclude_padding: capture the batch's attention masks, so observers can leave padding out.
    """

    def __init__(self, beta: float = BETA, exclude_padding: bool = True):
        super().__init__(beta)
        self.exclude_padding = exclude_padding
        self._handles: list = []
        self._masks: dict[str, torch.Tensor | None] = {}

    def attach(self, apt_model) -> "ObservingSalience":
        super().attach(apt_model)
        if self._handles:  # attached before (e.g. again after a checkpoint load): never hook twice
            return self
        model = apt_model.model
        if self.exclude_padding:
            self._handles.append(model.register_forward_pre_hook(_call(self._capture_masks), with_kwargs=True))
        self.add_observers(model)
        return self

    @abstractmethod
    def add_observers(self, model: nn.Module) -> None:
        """Register this scorer's forward hooks on ``model``'s modules, each through :meth:`observe`."""

    def observe(self, module: nn.Module, hook, prepend: bool) -> None:
        """Register ``hook`` as a forward hook of ``module``, removed again by :meth:`detach`."""
        self._handles.append(module.register_forward_hook(hook, prepend=prepend))

    def token_mask(self, stack: str, x: torch.Tensor) -> torch.Tensor | None:
        """The padding mask of the batch being run that matches activation ``x`` (see ``token_mask_for``)."""
        return token_mask_for(self._masks, stack, x)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear_pending()

    def _capture_masks(self, module, args, kwargs):
        # the padding masks of the batch being run; observers pick the one matching their tokens
        self._masks = {k: kwargs.get(k) for k in ("attention_mask", "decoder_attention_mask")}


def _call(method):
    """A plain function calling ``method``: a bound method as a hook would drag the whole scorer into any
    ``copy.deepcopy`` of the model (e.g. the export's), a function is shared instead."""
    def hook(*args, **kwargs):
        return method(*args, **kwargs)

    return hook
