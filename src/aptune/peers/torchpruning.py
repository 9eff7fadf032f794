"""Torch-Pruning as the peer of APT's adaptive pruning: one structured cut before tuning, then LoRA recovery with
PEFT (LLM-Pruner's recipe when the importance is Taylor's, from calibration batches).

Torch-Pruning traces the model into groups of coupled channels (a hidden dimension is a column of every layer, an
FFN neuron a row of up and a column of down, a head the rows of q, k and v) and removes the least important
channels of each group by its own importance: the L2 norm of the group's weights (``torchpruning_magnitude``), or
|w * dL/dw| summed over the group, the gradients accumulated over ``prune.calibration_batches`` training batches
(``torchpruning_taylor``). It leaves the per-group ratios to its user; aptune chooses them so that the cut keeps
``prune.density`` of the same budgeted parameters APT's density counts (``aptune.structures.params``), and so that
the result is a stock ``transformers`` model:

* BERT-style encoders: the heads, the hidden size and the FFN neurons, uniformly across layers (Torch-Pruning's
  local pruning); head size kept, so the hidden size is ``head_dim x heads`` as stock BERT's config requires. The
  kept heads ``k`` are those whose solved FFN width is nearest the same fraction of its original width (the most
  uniform cut); the FFN width is then solved for the budget to one neuron.
* LLaMA-style decoders: the FFN neurons only. Torch-Pruning 1.6.1's grouping of a grouped-query decoder's heads
  fails (a shape error on SmolLM2) and that of its hidden size does not finish, so the whole budget falls on the
  FFN, where APT spreads it over KV groups, neurons and hidden dimensions.

Then PEFT's LoRA on the run's adapter targets at ``adapter.rank`` (no growth), ``lora_alpha = adapter.scaling x
rank``, the task head trained whole when ``adapter.train_head``, for all of the run's steps.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from importlib.metadata import version

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from aptune.config import RunConfig
from aptune.families import family_for
from aptune.peers.adalora import TASK_TYPES
from aptune.structures.params import ParamCounter


@dataclass(frozen=True)
class Cut:
    """The sizes one cut leaves, uniform across layers, and the budget they meet."""

    heads: int  # attention heads (KV groups) per layer
    hidden: int
    ffn: int  # FFN neurons per layer
    target: int  # budgeted parameters asked for: prune.density x the dense count
    params: int  # budgeted parameters of these sizes


def plan_cut(counter: ParamCounter, density: float, prune_heads_and_hidden: bool) -> Cut:
    """The uniform sizes whose budgeted count is nearest ``density`` of the dense model's (see the module's
    docstring); raises ``ValueError`` where none meets it within 1%."""
    heads0, hidden0, ffn0 = _sizes(counter.family)
    site = counter.family.attention_sites[0]
    dense = _count(counter, heads0, hidden0, ffn0)
    target = round(density * dense)
    shapes = [(heads, site.head_dim * site.group_size * heads) for heads in range(1, heads0 + 1)] \
        if prune_heads_and_hidden else [(heads0, hidden0)]
    options = []
    for heads, hidden in shapes:
        fixed = _count(counter, heads, hidden, 0)
        ffn = round((target - fixed) / (_count(counter, heads, hidden, 1) - fixed))  # the count is linear in it
        params = _count(counter, heads, hidden, ffn)
        if 1 <= ffn <= ffn0 and abs(params - target) <= 0.01 * target:
            options.append((abs(ffn / ffn0 - heads / heads0), Cut(heads, hidden, ffn, target, params)))
    if not options:
        low = min(_count(counter, heads, hidden, 1) for heads, hidden in shapes) / dense
        raise ValueError(f"prune.density={density}: no uniform cut of this model keeps that share of its {dense:,} "
                         f"budgeted parameters within 1%; choose a density between {low:.2f} and 1")
    return min(options, key=lambda option: option[0])[1]


def _sizes(family) -> tuple[int, int, int]:
    """KV groups per layer, hidden size and FFN neurons per layer, read from the first layer's weights."""
    site, ffn = family.attention_sites[0], family.ffn_sites[0]
    model = family.model
    return (model.get_submodule(site.k).out_features // site.head_dim, model.get_submodule(site.q).in_features,
            model.get_submodule(ffn.down).in_features)


def _count(counter: ParamCounter, heads: int, hidden: int, ffn: int) -> int:
    return counter.count({name: heads for name in counter.attention}, {name: ffn for name in counter.ffn}, hidden)


def wrap(model: nn.Module, config: RunConfig, batches, importance: str = "magnitude") -> tuple[PeftModel, dict]:
    """Cut ``model`` with Torch-Pruning (``importance``: ``magnitude``, or ``taylor`` with gradients from the next
    ``prune.calibration_batches`` of ``batches``), then wrap it with PEFT's LoRA; returns it and what the cut was."""
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        raise ValueError(f"peer.method=torchpruning_{importance} needs Torch-Pruning: "
                         "pip install 'aptune[peers]'") from None
    family = family_for(model)
    if family.name not in ("bert", "llama"):
        raise ValueError(f"peer.method=torchpruning_{importance} runs on BERT-style encoders and LLaMA-style decoders, "
                         f"not on a {family.name} model")
    heads_and_hidden = family.name == "bert"
    cut = plan_cut(ParamCounter(family), config.prune.density, heads_and_hidden)
    calibration = config.prune.calibration_batches if importance == "taylor" else 0
    if calibration:
        model.eval()  # the importance of the weights as they compute, not of one dropout sample
        for _ in range(calibration):
            model(**next(batches)).loss.backward()
    _prune(model, family, cut, heads_and_hidden, importance)
    model.zero_grad(set_to_none=True)
    pruned = ParamCounter(family_for(model)).count_model()
    if pruned != cut.params:
        raise RuntimeError(f"Torch-Pruning left {pruned:,} budgeted parameters where the cut planned {cut.params:,}")
    roles = config.adapter.targets or list(family.default_adapter_roles)
    paths = family.role_paths()
    lora = LoraConfig(task_type=TASK_TYPES[config.model.head], r=config.adapter.rank,
                      lora_alpha=config.adapter.scaling * config.adapter.rank,
                      target_modules=[p for role in roles for p in paths[role]],
                      modules_to_save=list(family.task_head) if config.adapter.train_head else None)
    info = {"importance": importance, "calibration_batches": calibration, "torch_pruning": version("torch-pruning"),
            "cut": asdict(cut), "pruned": "heads, hidden size and FFN neurons" if heads_and_hidden
            else "FFN neurons only (Torch-Pruning cannot group a grouped-query decoder's heads and hidden size)"}
    return get_peft_model(model, lora), info


def _prune(model: nn.Module, family, cut: Cut, heads_and_hidden: bool, importance: str) -> None:
    """Torch-Pruning's pruner, its ratios set so that it keeps exactly ``cut``'s sizes (it rounds kept channels down
    and removed heads up: the ratios aim half a unit inside)."""
    import torch_pruning as tp

    scores = {"magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
              "taylor": lambda: tp.importance.GroupTaylorImportance()}[importance]()
    heads0, hidden0, ffn0 = _sizes(family)
    get = model.get_submodule
    qkv = [get(path) for s in family.attention_sites for path in (s.q, s.k, s.v)]
    example = {"input_ids": torch.ones(1, 8, dtype=torch.long), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    if family.name == "llama":
        example["use_cache"] = False  # the tracer follows tensors, not the cache object
    with warnings.catch_warnings():  # RMSNorm weights are not modules: it names them, an FFN cut leaves them whole
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        tp.pruner.BasePruner(
            model, example, importance=scores,
            pruning_ratio=1 - (cut.hidden + 0.5) / hidden0 if heads_and_hidden else 0.0,
            pruning_ratio_dict={get(p): 1 - (cut.ffn + 0.5) / ffn0 for s in family.ffn_sites for p in s.inputs},
            ignored_layers=_left_alone(model, family, heads_and_hidden),
            num_heads={module: heads0 for module in qkv} if heads_and_hidden else {},
            prune_num_heads=heads_and_hidden, prune_head_dims=False,
            head_pruning_ratio=(heads0 - cut.heads - 0.5) / heads0 if heads_and_hidden else 0.0,
            output_transform=lambda out: out.logits).step()
    model.config.intermediate_size = cut.ffn
    if heads_and_hidden:  # what stock BERT reads from its config and its attention modules hold
        model.config.hidden_size, model.config.num_attention_heads = cut.hidden, cut.heads
        for site in family.attention_sites:
            attention = get(site.module)
            attention.num_attention_heads, attention.all_head_size = cut.heads, cut.heads * site.head_dim


def _left_alone(model: nn.Module, family, heads_and_hidden: bool) -> list[nn.Module]:
    """The layers whose output channels Torch-Pruning must keep: the task head's outputs (classes, vocabulary) and,
    for an FFN-only cut, the attention and the embeddings (given to the tracer, its grouping of a GQA decoder's
    hidden size does not finish)."""
    paths = [name for name, _ in model.named_modules() if name in ("classifier", "lm_head", "qa_outputs", "score")]
    if not heads_and_hidden:
        paths += [p for s in family.attention_sites for p in s.linears] + list(family.hidden.embeddings)
    return [model.get_submodule(p) for p in paths]


def after_optimizer_step(model: PeftModel, step: int) -> None:
    """Nothing: the cut is made once, before tuning."""


def ranks(model: PeftModel) -> dict[str, int]:
    """Each adapted module's LoRA rank (fixed)."""
    return {name.removeprefix("base_model.model."): module.r["default"] for name, module in model.named_modules()
            if isinstance(getattr(module, "r", None), dict) and "default" in module.r}
