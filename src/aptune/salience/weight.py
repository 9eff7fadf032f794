"""Weight-based scorers: the ``weight_gradient_salience`` ablation and the magnitude / random baselines.

``WeightGradientSalience`` is the standard first-order score S(B) = Σ_{(i,j)∈B} |W_ij · ∂L/∂W_ij|
(docs/method.md §C, "standard weight-gradient salience"). The backbone is frozen, so ∂L/∂W is rebuilt
from hooks: for H = W·X, ∂L/∂W = Gᵀ·X summed over tokens (G = ∂L/∂H), and ∂L/∂b = Σ G. This needs a
weight-sized buffer per projection, which is exactly the memory APT's activation form avoids; the
ablation measures that cost, so nothing here tries to save it. What it does not need is a second copy of
every projection's input: the hook keeps the input autograd keeps, and masks it in backward.
W_eff = W + s·B·A is used (∂L/∂W equals ∂L/∂W_eff). No kurtosis term; EMA and the search stay the same
as for APT.
"""

from __future__ import annotations

import torch

from aptune.salience.base import (
    BETA,
    Salience,
    aggregate_blocks,
    effective_weight,
    masked_flat,
    site_linears,
    try_module,
    zero_scores,
)
from aptune.salience.capture import ObservingSalience


class WeightGradientSalience(ObservingSalience):
    """Σ|W_eff ⊙ ∂L/∂W| per block, with ∂L/∂W accumulated from activation hooks, EMA-smoothed.

    Args:
        beta: EMA factor (0.85).
        exclude_padding: leave padding tokens out of Gᵀ·X when the batch has an attention mask.
    """

    name = "weight_gradient"

    def __init__(self, beta: float = BETA, exclude_padding: bool = True):
        super().__init__(beta, exclude_padding)
        self._grad_w: dict[str, torch.Tensor] = {}
        self._grad_b: dict[str, torch.Tensor] = {}

    def add_observers(self, model) -> None:
        stacks = {p: s.stack for s in self.family.attention_sites for p in s.linears}
        stacks.update({p: s.stack for s in self.family.ffn_sites for p in (*s.inputs, s.down)})
        for path in site_linears(self.family):
            module = try_module(model, path)
            if module is None:  # q/k/v of an attention block already emptied
                continue
            # prepend: the gradient of the projection's own output, before any mask hook rescales it
            self.observe(module, self._observer(path, stacks[path]), prepend=True)

    def _observer(self, path: str, stack: str):
        def hook(module, args, output):
            if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor) or not output.requires_grad:
                return None
            if output.shape[-1] == 0 or args[0].shape[-1] == 0:
                return None
            mask = self.token_mask(stack, output)
            # the input itself, not a masked float32 copy: autograd keeps it until backward for the adapters
            # anyway, and a copy held per projection meant a second set of activations through the pruning window
            x = args[0].detach()

            def on_grad(grad):
                g = masked_flat(grad, mask)
                grad_w = g.t() @ masked_flat(x, mask)  # ∂L/∂W = Σ_tokens G_i X_jᵀ
                if path in self._grad_w and self._grad_w[path].shape == grad_w.shape:
                    self._grad_w[path] += grad_w
                    self._grad_b[path] += g.sum(0)
                else:
                    self._grad_w[path], self._grad_b[path] = grad_w, g.sum(0)
                return None

            output.register_hook(on_grad)
            return None

        return hook

    def clear_pending(self) -> None:
        self._grad_w, self._grad_b = {}, {}

    def step_scores(self) -> dict | None:
        if not self._grad_w:
            return None
        grad_w, grad_b = self._grad_w, self._grad_b
        self.clear_pending()
        model = self.apt.model
        matrices, biases = {}, {}
        for path, gw in grad_w.items():
            module = try_module(model, path)
            if module is None:
                continue
            weight = effective_weight(module)
            if weight.shape != gw.shape:  # gathered before a cut: stale
                continue
            matrices[path] = (weight * gw.to(weight.device)).abs()
            if module.bias is not None:
                biases[path] = (module.bias.detach().float() * grad_b[path].to(weight.device)).abs()
        return aggregate_blocks(self.family, self.state, matrices, biases)


class MagnitudeSalience(Salience):
    """Baseline: the L1 or L2 norm of each block's weights (W_eff rows/columns and biases).

    Static in the weights: ``update`` does nothing and ``scores`` reads the current weights.

    Args:
        p: 1 (L1 norm) or 2 (L2 norm).
    """

    name = "magnitude"

    def __init__(self, p: int = 1, beta: float = BETA):
        super().__init__(beta)
        if p not in (1, 2):
            raise ValueError(f"magnitude salience norm must be 1 or 2, got {p}")
        self.p = p

    def update(self) -> bool:
        return False

    def step_scores(self) -> dict | None:
        return None

    def scores(self) -> dict:
        model = self.apt.model
        matrices, biases = {}, {}
        for path in site_linears(self.family):
            module = try_module(model, path)
            if module is None:
                continue
            matrices[path] = effective_weight(module).abs().pow(self.p)
            if module.bias is not None:
                biases[path] = module.bias.detach().float().abs().pow(self.p)
        sums = aggregate_blocks(self.family, self.state, matrices, biases)
        if self.p == 2:
            sums = {
                "heads": {n: v.sqrt() for n, v in sums["heads"].items()},
                "ffn": {n: v.sqrt() for n, v in sums["ffn"].items()},
                "hidden": sums["hidden"].sqrt(),
            }
        return sums


class RandomSalience(Salience):
    """Baseline: a fixed random score per block, drawn once from ``seed`` over the original structures.

    Scores are tied to original indices (not redrawn per call), so the keep set does not flicker while
    soft masks decay, and the cut survivors keep their draws.

    Args:
        seed: seed of the draw.
    """

    name = "random"

    def __init__(self, seed: int = 0, beta: float = BETA):
        super().__init__(beta)
        self.seed = seed
        self._table: dict | None = None

    def attach(self, apt_model) -> "RandomSalience":
        super().attach(apt_model)
        if self._table is None:
            generator = torch.Generator().manual_seed(self.seed)
            state = self.state

            def draw(index: torch.Tensor) -> torch.Tensor:
                size = int(index.max()) + 1 if len(index) else 0
                return torch.rand(size, generator=generator)

            self._table = {
                "heads": {n: draw(i) for n, i in state.head_index.items()},
                "ffn": {n: draw(i) for n, i in state.ffn_index.items()},
                "hidden": draw(state.hidden_index),
            }
        return self

    def update(self) -> bool:
        return False

    def step_scores(self) -> dict | None:
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The draws, by original index (a scorer attached to a cut model could not redraw them)."""
        out = {"hidden": self._table["hidden"].clone()}
        for kind in ("heads", "ffn"):
            out.update({f"{kind}/{n}": v.clone() for n, v in self._table[kind].items()})
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self._table = {
            "heads": {n: tensors[f"heads/{n}"].clone() for n in self.state.heads},
            "ffn": {n: tensors[f"ffn/{n}"].clone() for n in self.state.ffn},
            "hidden": tensors["hidden"].clone(),
        }

    def scores(self) -> dict:
        state, table = self.state, self._table
        if table is None:
            return zero_scores(state)
        return {
            "heads": {n: table["heads"][n][i] for n, i in state.head_index.items()},
            "ffn": {n: table["ffn"][n][i] for n, i in state.ffn_index.items()},
            "hidden": table["hidden"][state.hidden_index],
        }
