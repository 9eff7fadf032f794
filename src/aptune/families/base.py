"""What a model family must tell aptune: where its prunable structures are and how they couple.

A family is the only code that knows module names (docs/design.md, non-negotiable 2). It describes a model as

* attention sites: one per attention block (BERT layer, LLaMA layer, T5 self/cross attention), with the
  paths of its q, k, v, o projections, the head size and the number of query heads per KV head. The unit
  of head pruning is a *group*: a KV head and the query heads that share it (a single head without GQA);
* FFN sites: the input projections (up, and gate for gated FFNs) whose rows are neurons, and the output
  projection (down) whose columns are neurons;
* the hidden stream: embeddings whose columns are hidden dimensions, norms over the hidden size, linears
  that read it (q, k, v, up, gate, the task head) and linears that write it (o, down).

Everything else in aptune speaks in (site, index).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from torch import nn


@dataclass
class AttentionSite:
    """One attention block. ``module`` is what gets swapped for an empty stand-in when no head is left."""

    name: str
    module: str
    q: str
    k: str
    v: str
    o: str
    head_dim: int
    group_size: int  # query heads per KV head (1 = plain multi-head attention)
    empty_kind: str  # kind of stand-in: aptune.structures.standins.empty_attention
    layer: int = 0
    stack: str = ""  # "", "encoder", "decoder" (T5 has both)

    @property
    def linears(self) -> tuple[str, str, str, str]:
        return (self.q, self.k, self.v, self.o)


@dataclass
class FFNSite:
    """One feed-forward block: neuron j is row j of every input projection and column j of ``down``."""

    name: str
    inputs: tuple[str, ...]  # up, or (gate, up) for gated FFNs
    down: str
    layer: int = 0
    stack: str = ""


@dataclass
class HiddenStream:
    """Where the model dimension d_m appears."""

    embeddings: list[str] = field(default_factory=list)  # nn.Embedding: columns = hidden dims
    stream_inputs: list[str] = field(default_factory=list)  # modules whose *output* enters the residual stream
    norms: list[str] = field(default_factory=list)  # norms over d_m inside the layers (counted in the budget)
    extra_norms: list[str] = field(default_factory=list)  # embedding / final norms (not counted, still cut)
    readers: list[str] = field(default_factory=list)  # linears whose input is d_m (q,k,v,up,gate, task head)
    writers: list[str] = field(default_factory=list)  # linears whose output is d_m (o, down)


class ModelFamily(ABC):
    """Base class: a family inspects a stock ``transformers`` model and lists its sites."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    # default adapter placement (roles), as in the paper/official code for this family
    default_adapter_roles: tuple[str, ...] = ("q", "v")
    norm_kind: str = "layernorm"  # or "rms"
    # Where APT salience observes the hidden dimensions (docs/method.md §C): "stream" = the residual stream
    # itself, i.e. the outputs of the hidden-size norms (post-LN encoders: the inputs of every attention and
    # FFN block and the encoder output, as the official BERT/RoBERTa scorer); "writers" = the o and down
    # outputs entering the stream (the official T5/LLaMA scorer).
    hidden_salience_sites: str = "writers"

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.attention_sites: list[AttentionSite] = []
        self.ffn_sites: list[FFNSite] = []
        self.hidden = HiddenStream()
        self.tied_embeddings: list[tuple[str, str]] = []  # (linear path, embedding path) sharing a weight
        self.task_head: list[str] = []  # modules trained with the adapters (classifier, pooler, score)
        self.describe()
        self._check_sites()

    # -- what each family file implements -----------------------------------------------------------
    @abstractmethod
    def describe(self) -> None:
        """Fill ``attention_sites``, ``ffn_sites``, ``hidden``, ``tied_embeddings`` and ``task_head``."""

    def role_paths(self) -> dict[str, list[str]]:
        """Linear paths by role (q, k, v, o, up, gate, down, and head: the task head's linears that read the hidden
        stream, such as BERT's pooler): where adapters may go."""
        roles: dict[str, list[str]] = {r: [] for r in ("q", "k", "v", "o", "up", "gate", "down")}
        roles["head"] = [path for path in self.task_head if path in self.hidden.readers]
        for site in self.attention_sites:
            roles["q"].append(site.q)
            roles["k"].append(site.k)
            roles["v"].append(site.v)
            roles["o"].append(site.o)
        for site in self.ffn_sites:
            if len(site.inputs) == 2:
                roles["gate"].append(site.inputs[0])
                roles["up"].append(site.inputs[1])
            else:
                roles["up"].append(site.inputs[0])
            roles["down"].append(site.down)
        return roles

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """Path of the base model inside a model with a task head ('bert.', 'model.', '')."""
        base = getattr(self.model, "base_model_prefix", "")
        return f"{base}." if base and hasattr(self.model, base) else ""

    @property
    def hidden_size(self) -> int:
        """The hidden size as the weights have it: an aptune export keeps the original one in its config."""
        if self.hidden.embeddings:
            return self.model.get_submodule(self.hidden.embeddings[0]).weight.shape[1]
        return self.config.hidden_size

    def _check_sites(self) -> None:
        # An export whose cut emptied a whole attention or FFN block holds a stand-in module there; tuning or
        # pruning it again would need sites that can be absent.
        for site in [*self.attention_sites, *self.ffn_sites]:
            for path in site.linears if isinstance(site, AttentionSite) else (*site.inputs, site.down):
                try:
                    self.model.get_submodule(path)
                except AttributeError:
                    raise ValueError(
                        f"{path} does not exist: this model is an aptune export in which an earlier cut emptied the "
                        f"block {site.name}; tuning or pruning such an export again is not supported (start from the "
                        f"model before that cut, or cut without emptying whole blocks)") from None

    def prunable_linears(self) -> list[str]:
        """Every linear whose shape can change: the site projections and the hidden-stream readers."""
        paths: list[str] = []
        for site in self.attention_sites:
            paths.extend(site.linears)
        for site in self.ffn_sites:
            paths.extend(site.inputs)
            paths.append(site.down)
        for path in self.hidden.readers + self.hidden.writers:
            if path not in paths:
                paths.append(path)
        return paths


FAMILIES: dict[str, type[ModelFamily]] = {}


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    FAMILIES[cls.name] = cls
    return cls


def family_for(model: nn.Module) -> ModelFamily:
    """The family that handles ``model``, or a ValueError naming the supported ones."""
    model_type = getattr(model.config, "model_type", None)
    model_type = getattr(model.config, "aptune_base_model_type", model_type)
    for cls in FAMILIES.values():
        if model_type in cls.model_types:
            return cls(model)
    supported = "; ".join(f"{cls.name} ({', '.join(cls.model_types)})" for cls in FAMILIES.values())
    raise ValueError(
        f"aptune does not support model_type {model_type!r} ({type(model).__name__}); supported families: "
        f"{supported}"
    )
