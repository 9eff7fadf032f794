"""Closed-form parameter count of the prunable part of a model (docs/method.md §B, eq. 6).

The budget counts what the paper counts: every attention and FFN projection and every norm inside the
layers, with biases; not the embeddings, the embedding/final norms or the task head. For an attention site
with g KV groups of ``gs`` query heads of size ``hd``, an FFN site with f neurons and n_in input
projections, and hidden size d:

    attention: d·hd·g·(2·gs + 2) + hd·g·(gs·b_q + b_k + b_v) + b_o·d
    FFN:       (n_in + 1)·d·f + f·Σ b_in + b_down·d
    norms:     (1 or 2)·d each (RMS: weight; LayerNorm: weight and bias)

where b_x is 1 when that projection has a bias. For RoBERTa-base this gives 85,054,464, the official
code's count. The per-block costs used by the budget search are the partial derivatives of this sum.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from aptune.families.base import ModelFamily


@dataclass(frozen=True)
class _AttentionCost:
    head_dim: int
    group_size: int
    q_bias: int
    k_bias: int
    v_bias: int
    o_bias: int


@dataclass(frozen=True)
class _FFNCost:
    inputs: int
    input_biases: int
    down_bias: int


def _has_bias(model: nn.Module, path: str) -> int:
    return int(getattr(model.get_submodule(path), "bias", None) is not None)


class ParamCounter:
    """Counts budgeted parameters from structure sizes alone (no model needed once built)."""

    def __init__(self, family: ModelFamily):
        model = family.model
        self.attention = {
            s.name: _AttentionCost(
                s.head_dim, s.group_size, _has_bias(model, s.q), _has_bias(model, s.k), _has_bias(model, s.v),
                _has_bias(model, s.o),
            )
            for s in family.attention_sites
        }
        self.ffn = {
            s.name: _FFNCost(len(s.inputs), sum(_has_bias(model, p) for p in s.inputs), _has_bias(model, s.down))
            for s in family.ffn_sites
        }
        self.norm_params_per_dim = sum(
            1 + int(getattr(model.get_submodule(p), "bias", None) is not None) for p in family.hidden.norms
        )
        self.norm_paths = list(family.hidden.norms)
        self.family = family

    # -------------------------------------------------------------------------- closed-form count
    def count(self, heads: dict[str, int], ffn: dict[str, int], hidden: int) -> int:
        """Budgeted parameters for ``heads[site]`` KV groups, ``ffn[site]`` neurons and ``hidden`` dims."""
        total = self.norm_params_per_dim * hidden
        for name, cost in self.attention.items():
            g = heads[name]
            total += hidden * cost.head_dim * g * (2 * cost.group_size + 2)
            total += cost.head_dim * g * (cost.group_size * cost.q_bias + cost.k_bias + cost.v_bias)
            total += cost.o_bias * hidden
        for name, cost in self.ffn.items():
            f = ffn[name]
            total += (cost.inputs + 1) * hidden * f + f * cost.input_biases + cost.down_bias * hidden
        return total

    def count_sizes(self, sizes: dict) -> int:
        """``count`` for a ``StructureState.sizes()`` / ``kept_sizes()`` dictionary."""
        return self.count(sizes["heads"], sizes["ffn"], sizes["hidden"])

    # ------------------------------------------------------------------------- per-block costs
    def group_cost(self, site: str, hidden: int) -> int:
        """Parameters of one KV group of ``site`` at hidden size ``hidden``."""
        c = self.attention[site]
        return hidden * c.head_dim * (2 * c.group_size + 2) + c.head_dim * (c.group_size * c.q_bias + c.k_bias + c.v_bias)

    def neuron_cost(self, site: str, hidden: int) -> int:
        c = self.ffn[site]
        return (c.inputs + 1) * hidden + c.input_biases

    def hidden_dim_cost(self, heads: dict[str, int], ffn: dict[str, int]) -> int:
        """Parameters of one hidden dimension given the current groups and neurons."""
        total = self.norm_params_per_dim
        for name, c in self.attention.items():
            total += c.head_dim * heads[name] * (2 * c.group_size + 2) + c.o_bias
        for name, c in self.ffn.items():
            total += (c.inputs + 1) * ffn[name] + c.down_bias
        return total

    # ---------------------------------------------------------------------------- real count
    def count_model(self) -> int:
        """The same parameters counted tensor by tensor (adapters excluded)."""
        model, family = self.family.model, self.family
        paths = [p for s in family.attention_sites for p in s.linears]
        paths += [p for s in family.ffn_sites for p in (*s.inputs, s.down)]
        total = 0
        for path in paths + self.norm_paths:
            try:
                module = model.get_submodule(path)
            except AttributeError:  # q/k/v of an attention block with no head left
                continue
            total += module.weight.numel()
            if getattr(module, "bias", None) is not None:
                total += module.bias.numel()
        return total
