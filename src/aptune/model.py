"""``APTModel``: a stock ``transformers`` model prepared for adaptive pruning and tuning.

Wrapping a model (PEFT's config/layer/model triple; here: ``AdapterConfig`` / ``APTLinear`` / ``APTModel``):

1. the family (``aptune.families``) lists the model's attention sites, FFN sites and hidden stream;
2. every prunable linear becomes an :class:`APTLinear` (rank r on the adapter targets, rank 0 elsewhere),
   frozen, so one slicing code path serves all of them;
3. hidden-dimension norms become :class:`MaskedNorm`; hooks apply the :class:`StructureState` masks;
4. only the adapters (and the task head, if asked) are trainable.

Then ``prune()`` cuts what the masks removed, ``export()`` writes a merged, physically smaller model in
Hugging Face format that stock ``from_pretrained`` reloads.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aptune.adapters.layer import APTLinear
from aptune.families import family_for
from aptune.families.base import ModelFamily
from aptune.models.lm_loss import causal_lm_loss
from aptune.structures.masks import MaskedNorm, MaskHooks, StructureState
from aptune.structures.params import ParamCounter
from aptune.structures.prune import prune_physically
from aptune.structures.standins import set_submodule


# the linear roles an adapter can sit on (what families' role_paths() name)
ADAPTER_ROLES = ("q", "k", "v", "o", "up", "gate", "down", "head")


@dataclass
class AdapterConfig:
    """Where adapters go and how big they start.

    Attributes:
        targets: roles that get an adapter (q, k, v, o, up, gate, down, head); empty = the family's default.
        rank: initial rank r (paper: 8).
        scaling: constant s in W + s·B·A (paper: 2, i.e. alpha 16 at r 8).
        train_head: train the task head (classifier, pooler) along with the adapters.
        train_base: train every weight (full fine-tuning baseline); adapters then usually have rank 0.
    """

    targets: list[str] = field(default_factory=list)
    rank: int = 8
    scaling: float = 2.0
    train_head: bool = True
    train_base: bool = False

    def __post_init__(self):
        unknown = set(self.targets) - set(ADAPTER_ROLES)
        if unknown:
            raise ValueError(f"unknown adapter targets {sorted(unknown)}; choose from {', '.join(ADAPTER_ROLES)}")
        if self.rank < 0:
            raise ValueError(f"adapter rank must be >= 0, got {self.rank}")


class APTModel(nn.Module):
    """A model with APT adapters, structure masks and physical pruning.

    Args:
        model: a stock ``transformers`` model of a supported family.
        adapter: adapter placement and size.
        seed: seeds the adapters' random initialisation.
    """

    def __init__(self, model: nn.Module, adapter: AdapterConfig | None = None, seed: int | None = None):
        super().__init__()
        self.adapter_config = adapter or AdapterConfig()
        self.model = model
        self.family: ModelFamily = family_for(model)
        if not self.adapter_config.targets:
            self.adapter_config.targets = list(self.family.default_adapter_roles)
        self.base_dtype = next(model.parameters()).dtype  # what the frozen weights are stored and computed in
        if seed is not None:
            torch.manual_seed(seed)
        self._wrap_linears()
        self.state = StructureState(self.family)
        self._wrap_norms()
        self.hooks = MaskHooks(self.family, self.state)
        self.hooks.attach()
        self.counter = ParamCounter(self.family)
        self.original_params = self.counter.count_model()
        self.set_trainable()
        if self.low_precision and self.adapter_config.train_head:
            self._float32_task_head()

    # --------------------------------------------------------------------------------- building
    @classmethod
    def from_pretrained(cls, name_or_path: str, head: str = "sequence-classification", num_labels: int | None = None,
                        adapter: AdapterConfig | None = None, seed: int | None = None, **kwargs) -> "APTModel":
        """Load ``minilm``, ``smollm2-135m``, a local folder or a hub id, and wrap it."""
        from aptune.models import load_model

        return cls(load_model(name_or_path, head=head, num_labels=num_labels, **kwargs), adapter, seed)

    def _wrap_linears(self) -> None:
        targets = {path for role in self.adapter_config.targets for path in self.family.role_paths()[role]}
        for path in self.family.prunable_linears():
            module = self.model.get_submodule(path)
            if isinstance(module, APTLinear):
                continue
            rank = self.adapter_config.rank if path in targets else 0
            set_submodule(self.model, path, APTLinear(module, rank=rank, scaling=self.adapter_config.scaling))

    def _wrap_norms(self) -> None:
        for path in self.family.hidden.norms + self.family.hidden.extra_norms:
            norm = self.model.get_submodule(path)
            set_submodule(self.model, path, MaskedNorm(norm, self.state, self.family.norm_kind))

    def set_trainable(self) -> None:
        """Adapters (and the task head / everything, as configured) train; the rest is frozen."""
        for param in self.model.parameters():
            param.requires_grad_(self.adapter_config.train_base)
        for module in self.adapters().values():
            module.lora_A.requires_grad_(True)
            module.lora_B.requires_grad_(True)
        if self.adapter_config.train_head:
            for path in self.family.task_head:
                for param in self.model.get_submodule(path).parameters():
                    param.requires_grad_(True)

    # -------------------------------------------------------------------------------- precision
    @property
    def low_precision(self) -> bool:
        return self.base_dtype in (torch.bfloat16, torch.float16)

    def autocast(self):
        """Autocast to the base's dtype for a low-precision base (float32 master weights, low-precision
        matmuls); nothing at all for a float32 base, so a float32 run computes exactly what it did before."""
        if not self.low_precision:
            return contextlib.nullcontext()
        device = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=self.base_dtype)

    def _float32_task_head(self) -> None:
        """A trained task head keeps float32 weights like the adapters; its inputs are cast to them, so that it
        also runs outside autocast (a user's own evaluation loop)."""
        for path in self.family.task_head:
            head = self.model.get_submodule(path)
            head.float()
            head.register_forward_pre_hook(_inputs_to_float32)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer's activations during backward (transformers' own mechanism, non-reentrant:
        the first forward keeps its autograd graph, so salience hooks commit once, from that graph)."""
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise ValueError(f"{type(self.model).__name__} does not support gradient checkpointing in transformers; "
                             "set train.gradient_checkpointing=false")
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # its name since transformers 5
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # ---------------------------------------------------------------------------------- queries
    def forward(self, *args, **kwargs):
        labels = kwargs.get("labels")
        if labels is None or not (self.low_precision and self.is_causal_lm):
            with self.autocast():
                return self.model(*args, **kwargs)
        # a low-precision causal LM: the loss keeps the logits in their dtype, not a float32 copy of them all
        with self.autocast():
            out = self.model(*args, **{k: v for k, v in kwargs.items() if k != "labels"})
        out["loss"] = causal_lm_loss(out.logits, labels, num_items_in_batch=kwargs.get("num_items_in_batch"))
        return out

    @property
    def is_causal_lm(self) -> bool:
        return type(self.model).__name__.endswith("ForCausalLM")

    def adapters(self) -> dict[str, APTLinear]:
        """Adapter layers with rank > 0, by path."""
        return {name: m for name, m in self.model.named_modules() if isinstance(m, APTLinear) and m.rank > 0}

    def ranks(self) -> dict[str, int]:
        return {name: m.rank for name, m in self.adapters().items()}

    def num_params(self) -> int:
        """Budgeted parameters of the current physical model (closed form)."""
        return self.counter.count_sizes(self.state.sizes())

    def num_kept_params(self) -> int:
        """Budgeted parameters once every zero mask entry is cut (closed form)."""
        return self.counter.count_sizes(self.state.kept_sizes())

    # ---------------------------------------------------------------------------------- pruning
    def prune(self) -> dict:
        """Physically remove every structure whose (binary) mask is 0."""
        return prune_physically(self.family, self.state)

    # ----------------------------------------------------------------------------------- export
    def merged_model(self, dtype: torch.dtype | None = None) -> nn.Module:
        """A stock ``transformers`` model, physically pruned, adapters merged (the wrapper is untouched), in
        ``dtype`` (default: the base's; float32 adapters and head are merged and cast to it)."""
        if not self.state.is_binary():
            raise ValueError("masks hold soft values; make them binary (or prune) before exporting")
        self.hooks.detach()
        try:
            clone = copy.deepcopy(self)
        finally:
            self.hooks.attach()
        _drop_training_hooks(clone.model)
        clone.prune()
        model = clone.model
        for name, module in list(model.named_modules()):
            if isinstance(module, APTLinear):
                set_submodule(model, name, module.merge())
            elif isinstance(module, MaskedNorm):
                set_submodule(model, name, module.unwrap())
        for tied_path, embedding_path in clone.family.tied_embeddings:
            model.get_submodule(tied_path).weight = model.get_submodule(embedding_path).weight
        model._aptune_record = structure_record(clone.family, clone.state, self.ranks(), clone.counter)
        for param in model.parameters():
            param.requires_grad_(False)
        return model.to(dtype or self.base_dtype).eval()

    def export(self, directory: str | Path, tokenizer=None, card: dict | None = None,
               dtype: torch.dtype | None = None) -> Path:
        """Save the merged, pruned model in Hugging Face format (see ``aptune.export.hf``) with a model card;
        ``card`` adds what the folder cannot tell (base model, task, metrics, command; ``aptune.export.card``);
        ``dtype``: the saved weights' (default: the base's)."""
        from aptune.export.hf import save_export

        return save_export(self.merged_model(dtype), directory, tokenizer=tokenizer, card=card)


def _inputs_to_float32(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _training_hook(fn) -> bool:
    """Salience scorers' observers and the float32 head's input cast: hooks of the training model only."""
    return fn is _inputs_to_float32 or getattr(fn, "__module__", "").startswith("aptune.salience")


def _drop_training_hooks(model: nn.Module) -> None:
    """Remove the training model's own hooks from a copy of it (they observe or serve the training model, not
    its export)."""
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, fn in hooks.items() if _training_hook(fn)]:
                del hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_pre_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)


def structure_record(family: ModelFamily, state: StructureState, ranks: dict[str, int], counter: ParamCounter) -> dict:
    """What an export needs to rebuild the pruned shapes (see ``modeling_aptune.apply_structure``)."""
    model = family.model
    record: dict = {"format": 1, "family": family.name, "linears": {}, "norms": {}, "embeddings": {},
                    "empty_attention": {}, "t5_kept_heads": {}}
    for path in family.prunable_linears():
        try:
            linear = model.get_submodule(path)
        except AttributeError:
            continue  # inside an attention block with no head left
        record["linears"][path] = [linear.out_features, linear.in_features]
    for path in family.hidden.norms + family.hidden.extra_norms:
        record["norms"][path] = int(model.get_submodule(path).weight.shape[0])
    for path in family.hidden.embeddings:
        record["embeddings"][path] = int(model.get_submodule(path).weight.shape[1])
    for site in family.attention_sites:
        if len(state.heads[site.name]) == 0:
            record["empty_attention"][site.module] = site.empty_kind
        elif site.empty_kind == "t5" and len(state.heads[site.name]) < state.original_sizes["heads"][site.name]:
            record["t5_kept_heads"][site.module] = state.head_index[site.name].tolist()
    record["kept"] = state.keep_masks()
    record["ranks"] = ranks
    record["params"] = counter.count_sizes(state.sizes())
    return record
