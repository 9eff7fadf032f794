"""Pick the structures to keep under a parameter budget (docs/method.md §D).

Every block (KV group, FFN neuron, hidden dimension) gets a density = salience / parameter cost. Blocks
are sorted by density, and a binary search finds the longest prefix whose closed-form parameter count
(``ParamCounter``) stays within ``budget``. The count of a prefix grows with its length, so the search is
exact: the chosen set fits and adding the next block would not. Pure tensor code; the model is not touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aptune.structures.masks import StructureState
from aptune.structures.params import ParamCounter


@dataclass(frozen=True)
class Block:
    kind: str  # "heads", "ffn" or "hidden"
    site: str  # site name ("" for hidden)
    index: int  # position in the site's *current* mask


@dataclass
class KeepSet:
    """Binary masks (current shapes) of the chosen blocks, and the parameters they cost."""

    heads: dict[str, torch.Tensor]
    ffn: dict[str, torch.Tensor]
    hidden: torch.Tensor
    params: int
    budget: int


class EmptyKeepSetError(ValueError):
    """The budget keeps no hidden dimension, or no attention head and no FFN neuron anywhere: such a model computes
    nothing (all-zero logits), so it is refused rather than exported.

    Attributes:
        missing: what the keep set lacks, in words (``"no hidden dimension"``).
        smallest_budget: the least budget whose keep set has a hidden dimension and a head or a neuron (with the
            same ``round_to``); None when even the whole model would not.
    """

    def __init__(self, message: str, missing: str, smallest_budget: int | None):
        super().__init__(message)
        self.missing = missing
        self.smallest_budget = smallest_budget


def blocks_of(state: StructureState) -> list[Block]:
    """All blocks of a model, in a fixed order (heads, neurons, hidden dims)."""
    blocks = [Block("heads", n, i) for n, m in state.heads.items() for i in range(len(m))]
    blocks += [Block("ffn", n, i) for n, m in state.ffn.items() for i in range(len(m))]
    blocks += [Block("hidden", "", i) for i in range(len(state.hidden))]
    return blocks


def _block_costs(counter: ParamCounter, state: StructureState) -> dict[str, torch.Tensor | float]:
    sizes = state.sizes()
    d = sizes["hidden"]
    costs = {f"heads/{n}": float(counter.group_cost(n, d)) for n in state.heads}
    costs.update({f"ffn/{n}": float(counter.neuron_cost(n, d)) for n in state.ffn})
    costs["hidden"] = float(counter.hidden_dim_cost(sizes["heads"], sizes["ffn"]))
    return costs


def search_keep_set(
    scores: dict[str, dict[str, torch.Tensor] | torch.Tensor],
    state: StructureState,
    counter: ParamCounter,
    budget: int,
    protect: dict[str, list[int]] | None = None,
    round_to: int = 1,
) -> KeepSet:
    """Longest density-sorted prefix of blocks whose parameter count is at most ``budget``.

    Args:
        scores: {"heads": {site: [groups]}, "ffn": {site: [neurons]}, "hidden": [d]} salience, current shapes.
        state: the model's structure state (current shapes).
        counter: the closed-form parameter counter.
        budget: parameters allowed (e.g. density × the original count).
        protect: blocks always kept, e.g. {"heads/<site>": [0]} (they are ranked first; see :func:`layer_floor`):
            the other blocks, hidden dimensions included, share what is left of the budget.
        round_to: round every FFN site's and the hidden size's kept count *down* to a multiple of this
            (dropping their least dense blocks): matmuls with aligned sizes run markedly faster, at the cost of
            ending slightly under the budget. 1 = exact search.
    """
    if budget < 0:
        raise ValueError(f"parameter budget must be >= 0, got {budget}")
    ranking = _rank_blocks(scores, state, _block_costs(counter, state), protect or {})
    length = _longest_prefix_within(budget, counter, ranking)
    heads, ffn, hidden = ranking.masks(length)
    if round_to > 1:
        _round_down(ranking, ffn, hidden, round_to)
    missing = _what_is_missing(heads, ffn, hidden)
    if missing is not None:
        ffn_sites = [ranking.site_names.index(n) for n in state.ffn]
        shortest = _shortest_working_prefix(ranking.kind, ranking.site, ffn_sites, round_to)
        raise _empty_keep_set_error(budget, missing, ranking.params(counter, shortest) if shortest is not None else None)
    if round_to > 1:
        sizes = {"heads": {n: int(m.sum()) for n, m in heads.items()}, "ffn": {n: int(m.sum()) for n, m in ffn.items()},
                 "hidden": int(hidden.sum())}
        return KeepSet(heads, ffn, hidden, counter.count_sizes(sizes), budget)
    return KeepSet(heads, ffn, hidden, ranking.params(counter, length), budget)


def layer_floor(scores, state: StructureState, fraction: float, round_to: int = 1) -> dict[str, list[int]]:
    """Blocks to protect so that no layer is cut below ``fraction`` of its pretrained width: the most salient
    ceil(fraction x original count) KV groups and FFN neurons of every site (all it still has, if fewer), as
    ``protect`` for :func:`search_keep_set`. The hidden size has no floor: a high floor is paid for by the
    other blocks, hidden dimensions among them.

    With ``round_to`` > 1 (the same as the search's) an FFN site's floor is rounded *up* to a multiple of it, so
    that rounding the kept widths down never cuts a layer below the floor (SmolLM2-135M at 0.6 and 8: 928 of
    1,536 neurons instead of 922, which rounding would take to 920). KV groups are not rounded."""
    if not 0 <= fraction < 1:
        raise ValueError(f"a layer floor is a fraction in [0, 1); got {fraction}")
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1; got {round_to}")
    protect = {}
    for kind in ("heads", "ffn"):
        for name, mask in getattr(state, kind).items():
            wanted = math.ceil(fraction * state.original_sizes[kind][name])
            if kind == "ffn" and wanted > 0:
                wanted = -(-wanted // round_to) * round_to
            wanted = min(wanted, len(mask))
            if wanted > 0:
                score = torch.as_tensor(scores[kind][name], dtype=torch.float64).flatten()
                protect[f"{kind}/{name}"] = torch.argsort(score, descending=True, stable=True)[:wanted].tolist()
    return protect


@dataclass
class _Ranking:
    """Every block in descending density order: its kind (0 heads, 1 ffn, 2 hidden), site (an index into
    ``site_names``; the hidden dimension's site is "") and index within the site."""

    kind: torch.Tensor
    site: torch.Tensor
    index: torch.Tensor
    site_names: list[str]
    state: StructureState

    def masks(self, length: int):
        """Binary masks of the first ``length`` blocks."""
        heads = {n: torch.zeros(len(m)) for n, m in self.state.heads.items()}
        ffn = {n: torch.zeros(len(m)) for n, m in self.state.ffn.items()}
        hidden = torch.zeros(len(self.state.hidden))
        for k, s, i in zip(self.kind[:length].tolist(), self.site[:length].tolist(), self.index[:length].tolist()):
            if k == 0:
                heads[self.site_names[s]][i] = 1.0
            elif k == 1:
                ffn[self.site_names[s]][i] = 1.0
            else:
                hidden[i] = 1.0
        return heads, ffn, hidden

    def params(self, counter: ParamCounter, length: int) -> int:
        """Parameters of the first ``length`` blocks, from counts per site (no masks built)."""
        kind, site = self.kind[:length], self.site[:length]
        heads = {n: int(((kind == 0) & (site == self.site_names.index(n))).sum()) for n in self.state.heads}
        ffn = {n: int(((kind == 1) & (site == self.site_names.index(n))).sum()) for n in self.state.ffn}
        return counter.count(heads, ffn, int((kind == 2).sum()))


def _rank_blocks(scores, state: StructureState, costs: dict, protect: dict[str, list[int]]) -> _Ranking:
    """Salience per parameter of every block, protected blocks first, sorted (stable) by that density."""
    kinds, sites, indices, densities = [], [], [], []
    site_names = list(state.heads) + list(state.ffn) + [""]

    def add(kind_id: int, site_name: str, score: torch.Tensor, cost: float) -> None:
        densities.append(score / cost)
        kinds.append(torch.full((len(score),), kind_id))
        sites.append(torch.full((len(score),), site_names.index(site_name)))
        indices.append(torch.arange(len(score)))

    for kind_id, (kind, group) in enumerate((("heads", state.heads), ("ffn", state.ffn))):
        for name, mask in group.items():
            score = torch.as_tensor(scores[kind][name], dtype=torch.float64).flatten()
            if score.shape[0] != len(mask):
                raise ValueError(f"{kind} scores of {name!r} have {score.shape[0]} entries; expected {len(mask)}")
            add(kind_id, name, score, costs[f"{kind}/{name}"])
    hidden_score = torch.as_tensor(scores["hidden"], dtype=torch.float64).flatten()
    if hidden_score.shape[0] != len(state.hidden):
        raise ValueError(f"hidden scores have {hidden_score.shape[0]} entries; expected {len(state.hidden)}")
    add(2, "", hidden_score, costs["hidden"])
    density, kind, site, index = (torch.cat(x) for x in (densities, kinds, sites, indices))
    for key, protected in protect.items():
        kind_name, _, name = key.partition("/")
        kid, sid = ("heads", "ffn", "hidden").index(kind_name), site_names.index(name)
        for i in protected:
            density[(kind == kid) & (site == sid) & (index == i)] = float("inf")
    order = torch.argsort(density, descending=True, stable=True)
    return _Ranking(kind[order], site[order], index[order], site_names, state)


def _longest_prefix_within(budget: int, counter: ParamCounter, ranking: _Ranking) -> int:
    """Binary search for the largest prefix length whose parameters fit ``budget`` (the count grows with it)."""
    lo, hi = 0, len(ranking.kind)  # invariant: params(lo) <= budget
    if ranking.params(counter, hi) <= budget:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ranking.params(counter, mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _round_down(ranking: _Ranking, ffn: dict[str, torch.Tensor], hidden: torch.Tensor, round_to: int) -> None:
    """Cut every FFN site's and the hidden size's kept count down to a multiple of ``round_to`` in place,
    dropping the site's least dense kept blocks."""
    for kid, groups in ((1, list(ffn.items())), (2, [("", hidden)])):
        for name, mask in groups:
            kept = torch.nonzero(mask > 0).flatten()
            excess = len(kept) % round_to
            if excess == 0:
                continue
            selected = (ranking.kind == kid) & (ranking.site == ranking.site_names.index(name))
            # the kept blocks of this site are its first len(kept) in density order (the kept set is a prefix)
            ordered = ranking.index[selected][: len(kept)]
            mask[ordered[len(kept) - excess:]] = 0.0


def _empty_keep_set_error(budget: int, missing: str, smallest: int | None) -> EmptyKeepSetError:
    advice = (f"the smallest budget that keeps one hidden dimension and one attention head or FFN neuron is "
              f"{smallest:,} parameters" if smallest is not None else "no budget keeps a working model")
    return EmptyKeepSetError(f"a budget of {budget:,} parameters keeps {missing}, so the model would compute "
                             f"nothing; {advice}: raise the density", missing, smallest)


def _what_is_missing(heads: dict[str, torch.Tensor], ffn: dict[str, torch.Tensor], hidden: torch.Tensor) -> str | None:
    """Why a keep set leaves a model that computes nothing, in words; None when it keeps enough."""
    if not bool((hidden > 0).any()):
        return "no hidden dimension"
    if not any(bool((mask > 0).any()) for mask in (*heads.values(), *ffn.values())):
        return "no attention head and no FFN neuron anywhere"
    return None


def _shortest_working_prefix(kind: torch.Tensor, site: torch.Tensor, ffn_sites: list[int], round_to: int) -> int | None:
    """Length of the shortest density-sorted prefix that keeps a hidden dimension and a head or a neuron after
    rounding (an FFN site or the hidden size needs ``round_to`` blocks to keep any); None if no prefix does."""
    needed = max(1, round_to)
    hidden = torch.cumsum(kind == 2, dim=0)
    heads = torch.cumsum(kind == 0, dim=0)
    widest_ffn = torch.zeros_like(hidden)
    for sid in ffn_sites:
        widest_ffn = torch.maximum(widest_ffn, torch.cumsum((kind == 1) & (site == sid), dim=0))
    works = (hidden >= needed) & ((heads >= 1) | (widest_ffn >= needed))
    found = torch.nonzero(works).flatten()
    return int(found[0]) + 1 if len(found) else None
