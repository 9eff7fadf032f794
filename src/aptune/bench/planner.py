"""Plan a run before buying the machine: parameters at a density and the memory of a training step and of
inference, by component, from a model's ``config.json`` alone (the model is built on the meta device: no
weight is read or allocated).

Three phases of an APT run have different peaks (docs/method.md §G):

* **tuning**: the dense model with adapters at their initial rank, before salience collection;
* **pruning**: the last pruning step. Under the default dense teacher the blocks are still in the tensors, the
  adapters have grown to the rank budget and self-distillation runs (teacher adapters, layer transform): the
  peak of a run with distillation. Without distillation the blocks left at every pruning step, so the model is
  taken as cut;
* **recovery**: the model cut to its density, adapters at the budget, task loss only.

The activation term counts what autograd keeps for backward, layer by layer, as transformers' modules and
aptune's adapters save it (``activation_bytes_per_token``); it follows the deterministic measure of
``bench.memory`` and is checked against it on MiniLM and SmolLM2 (``tests/test_planner.py``). Cut sizes
assume the blocks are removed evenly from every layer (the search removes them where salience is lowest,
which changes the per-layer shapes but not the count). GPU numbers are estimates: CUDA runs fused attention
and keeps boolean dropout masks, which the plan models, but nothing here has been measured on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aptune.bench.memory import TrainingMemory, peak_forward_bytes
from aptune.config import APTConfig, RunConfig
from aptune.distill.self_distill import TEACHER_BLOCKS, TRANSFORM_RANK
from aptune.method import APT
from aptune.model import AdapterConfig, APTModel
from aptune.models.loading import is_aptune_export, auto_class, resolve_model_source
from aptune.tuning.rank_allocator import grow_ranks, tuning_params

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class PlanSettings:
    """What a plan is made for (the run config's names in comments)."""

    density: float = 0.4  # prune.density
    batch_size: int = 32  # train.batch_size
    seq_len: int = 128  # data.max_length (every sequence assumed full)
    dtype: str = "float32"  # model.dtype of the frozen base
    rank: int = 8  # adapter.rank
    targets: list[str] = field(default_factory=list)  # adapter.targets; empty: the family's default
    budget_ratio: float = 4.0  # rank.budget_ratio
    distill: bool = False  # distill.enabled
    recover_teacher: bool = False  # recover.teacher=dense (after prune.before_tuning; excludes distill)
    gradient_checkpointing: bool = False  # train.gradient_checkpointing
    device: str = "cpu"  # cpu | cuda: which attention kernel and dropout masks to expect


@dataclass
class Architecture:
    """What the plan needs to know about a model, read from its meta-device build."""

    family: str
    head: str
    layers: int
    hidden: int
    heads: int  # query heads per layer
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    gated_ffn: bool
    norm_kind: str
    attention_dropout: float
    hidden_dropout: float
    total_params: int  # every tensor, embeddings included
    budgeted_params: int  # what density is a share of (``ParamCounter``)
    head_params: int  # the task head's (trained with the adapters, float32)


def build_on_meta(config, head: str, targets: list[str] | None = None, rank: int = 8) -> APTModel:
    """The model of ``config`` (a ``transformers`` config) with its task head, wrapped for APT, on the meta
    device: shapes and counts only."""
    # an aptune export's config names its own classes (auto_map), which build the pruned shapes
    exported = getattr(config, "aptune_structure", None) is not None
    with torch.device("meta"):
        model = auto_class(head).from_config(config, trust_remote_code=exported)
    return APTModel(model, AdapterConfig(list(targets or []), rank))


def describe(apt: APTModel, head: str) -> Architecture:
    family, state, config = apt.family, apt.state, apt.model.config
    site = family.attention_sites[0]
    ffn_site = family.ffn_sites[0]
    groups = state.sizes()["heads"][site.name]
    head_params = sum(p.numel() for path in family.task_head for p in apt.model.get_submodule(path).parameters())
    return Architecture(
        family=family.name, head=head, layers=len(family.attention_sites), hidden=len(state.hidden),
        heads=groups * site.group_size, kv_heads=groups, head_dim=site.head_dim,
        ffn=state.sizes()["ffn"][ffn_site.name], vocab=int(getattr(config, "vocab_size", 0) or 0),
        gated_ffn=len(ffn_site.inputs) > 1, norm_kind=family.norm_kind,
        attention_dropout=float(_first(config, "attention_probs_dropout_prob", "attention_dropout", "dropout_rate")),
        hidden_dropout=float(_first(config, "hidden_dropout_prob", "hidden_dropout", "dropout_rate")),
        total_params=sum(p.numel() for p in apt.model.parameters()) - _adapter_params(apt),
        budgeted_params=apt.original_params, head_params=head_params,
    )


def _first(config, *names) -> float:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)):
            return value
    return 0.0


def _adapter_params(apt: APTModel) -> int:
    return sum(m.lora_A.numel() + m.lora_B.numel() for m in apt.adapters().values())


# ------------------------------------------------------------------------------------------ the cut


def even_cut(apt: APTModel, density: float) -> dict:
    """Kept sizes (``StructureState.sizes()`` layout) at ``density``: the same share of KV groups and FFN
    neurons in every layer, the hidden size kept; the largest share whose count fits the budget. Raises when
    even no heads and neurons at all would not fit (then the hidden size must go too: use a higher density)."""
    state, counter = apt.state, apt.counter
    budget = density * apt.original_params
    sizes = state.sizes()

    def at(share: float) -> dict:
        return {"heads": {n: math.floor(share * g) for n, g in sizes["heads"].items()},
                "ffn": {n: math.floor(share * f) for n, f in sizes["ffn"].items()}, "hidden": sizes["hidden"]}

    if counter.count_sizes(at(0.0)) > budget:
        raise ValueError(f"density {density} is below what the hidden size alone costs "
                         f"({counter.count_sizes(at(0.0)) / apt.original_params:.3f} of the budgeted parameters); "
                         "plan a higher density")
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if counter.count_sizes(at(mid)) <= budget else (low, mid)
    return at(low)


# ---------------------------------------------------------------------------------------- activations


def activation_bytes_per_token(arch: Architecture, settings: PlanSettings, kept: dict | None,
                               ranks_per_layer: float, targets: list[str]) -> dict:
    """Bytes that autograd keeps for backward in one step, per token: ``layers`` (one entry per layer),
    ``model`` (outside the layers: the last norm, the logits) and ``layer_inputs`` (what gradient checkpointing
    keeps of each layer instead: its input)."""
    act = BYTES[settings.dtype]  # matmul outputs under autocast, and everything in a float32 run
    low = settings.dtype != "float32"
    f32 = 4
    cuda = settings.device == "cuda"
    shapes = _layer_shapes(arch, kept)
    layers = []
    for heads, kv_heads, ffn, hidden in shapes:
        width_q, width_kv = heads * arch.head_dim, kv_heads * arch.head_dim
        b = 0.0
        # inputs of the adapter-bearing linears (q/k/v share theirs, up/gate theirs), and the rank-r middles
        b += act * (hidden * bool(set(targets) & {"q", "k", "v"}) + width_q * ("o" in targets)
                    + hidden * bool(set(targets) & {"up", "gate"}) + ffn * ("down" in targets))
        b += act * ranks_per_layer
        b += 2 * _norm_bytes(arch, hidden, act)  # two norms per layer
        if heads:
            if cuda or arch.attention_dropout == 0:  # fused attention: q, out, k, v and the log-sum-exp
                b += act * (2 * width_q + 2 * width_kv) + f32 * heads
            else:  # CPU with attention dropout: the math kernel keeps q, k, v and three score-sized tensors, in
                # float32 under CPU autocast
                b += (f32 if low else act) * 3 * (width_q + heads * settings.seq_len)
        if ffn:
            b += act * (3 if arch.gated_ffn else 1) * ffn
        if arch.hidden_dropout > 0:  # the dropout masks after attention and FFN (float on CPU, bool on CUDA)
            b += 2 * hidden * (1 if cuda else act)
        layers.append(b)
    hidden = shapes[-1][3] if shapes else arch.hidden
    model = _norm_bytes(arch, hidden, act)  # the embedding norm / final norm
    if arch.hidden_dropout > 0:  # the embeddings' dropout mask
        model += hidden * (1 if cuda else act)
    if arch.head == "causal-lm":
        model += act * arch.vocab  # the logits as the loss keeps them (aptune.models.lm_loss: in their own dtype)
    # under checkpointing each layer keeps its input, and an encoder's (batch, 1, seq, seq) attention mask once
    layer_inputs = [act * shape[3] for shape in shapes] + [f32 * settings.seq_len * (arch.head != "causal-lm")]
    return {"layers": layers, "model": model, "layer_inputs": layer_inputs}


def _norm_bytes(arch: Architecture, hidden: int, act: int) -> int:
    """What one norm keeps per token: its input (in the activation dtype) and its statistics (LayerNorm: mean and
    1/std in that dtype; aptune's RMS norm: 1/rms in float32)."""
    if arch.norm_kind == "layernorm":
        return act * (hidden + 2)
    return act * hidden + 4


def _layer_shapes(arch: Architecture, kept: dict | None) -> list[tuple[int, int, int, int]]:
    """(query heads, KV heads, FFN width, hidden) of every layer, dense or after ``kept``."""
    if kept is None:
        return [(arch.heads, arch.kv_heads, arch.ffn, arch.hidden)] * arch.layers
    group = arch.heads // max(1, arch.kv_heads)
    heads, ffn = list(kept["heads"].values()), list(kept["ffn"].values())
    return [(g * group, g, f, kept["hidden"]) for g, f in zip(heads, ffn)]


# ------------------------------------------------------------------------------------------ the plan


# ------------------------------------------------------------------------------------------ a run config


def load_model_config(model: str):
    """The ``transformers`` config of a short name, folder, GGUF file or config file (no weights read)."""
    from transformers import AutoConfig

    path = Path(model)
    if path.is_file() and path.suffix == ".json":
        return AutoConfig.from_pretrained(str(path))
    source = resolve_model_source(model)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    # an aptune export names its own config class (modeling_aptune.py), as load_model reads it
    return AutoConfig.from_pretrained(source.path, trust_remote_code=is_aptune_export(source.path), **kwargs)


def plan_settings(config: RunConfig, dtype: str, device: str) -> PlanSettings:
    """What the planner needs of a run config, for one dtype of the frozen base."""
    return PlanSettings(density=config.prune.density if config.prune.enabled else 1.0,
                        batch_size=config.train.batch_size, seq_len=config.data.max_length, dtype=dtype,
                        rank=config.adapter.rank, targets=list(config.adapter.targets),
                        budget_ratio=config.rank.budget_ratio, distill=config.distill.enabled,
                        recover_teacher=config.recover.enabled,
                        gradient_checkpointing=config.train.gradient_checkpointing, device=device)


def plan_run(config: RunConfig, dtype: str, device: str, model_config=None) -> dict:
    """The plan of the run ``config`` describes, with its frozen base in ``dtype`` (``model_config``: the model's
    ``transformers`` config when already read)."""
    head = config.model.head
    apt = build_on_meta(model_config or load_model_config(config.model.name), head, targets=config.adapter.targets,
                        rank=config.adapter.rank)
    return plan(apt, describe(apt, head), plan_settings(config, dtype, device))


# ------------------------------------------------------------------------------ the memory of one step


@dataclass
class PhaseMemory:
    """Bytes of one training step (and its parts) in one phase."""

    phase: str
    params: int  # budgeted parameters the model holds
    frozen_weights: int
    adapters: int
    head: int
    gradients: int
    optimizer: int
    activations: int  # kept for backward through the step
    recomputed: int  # with gradient checkpointing: one layer's activations, rebuilt during backward
    teacher: int

    @property
    def total(self) -> int:
        return (self.frozen_weights + self.adapters + self.head + self.gradients + self.optimizer + self.activations
                + self.recomputed + self.teacher)


def plan(apt: APTModel, arch: Architecture, settings: PlanSettings) -> dict:
    """The plan: parameters before and after the cut, the three phases' training memory and inference memory."""
    tokens = settings.batch_size * settings.seq_len
    targets = list(apt.adapter_config.targets)
    adapters0 = _adapter_params(apt)
    rank_sites = len(apt.adapters())
    kept = even_cut(apt, settings.density)
    cut = apt.counter.count_sizes(kept)
    other = arch.total_params - arch.budgeted_params  # embeddings, the task head: not pruned by density
    ratio = settings.budget_ratio
    ranks0 = settings.rank * rank_sites / max(1, arch.layers)  # Σ r over one layer's adapters

    def phase(name: str, kept_sizes: dict | None, adapters: int, ranks: float, distill: bool) -> PhaseMemory:
        params = arch.budgeted_params if kept_sizes is None else apt.counter.count_sizes(kept_sizes)
        weights = (params + other - arch.head_params) * BYTES[settings.dtype]
        per_token = activation_bytes_per_token(arch, settings, kept_sizes, ranks, targets)
        if settings.gradient_checkpointing:  # the layers' inputs are kept; one layer at a time is recomputed
            kept_for_backward = sum(per_token["layer_inputs"]) + per_token["model"]
            recomputed = max(per_token["layers"], default=0.0)
        else:
            kept_for_backward, recomputed = sum(per_token["layers"]) + per_token["model"], 0.0
        trainable = adapters + arch.head_params
        teacher = _teacher_bytes(arch, settings, adapters, tokens) if distill else 0
        if settings.recover_teacher:
            teacher += _recovery_teacher_bytes(arch, settings, tokens)
        return PhaseMemory(name, params, int(weights), 4 * adapters, 4 * arch.head_params, 4 * trainable,
                           8 * trainable, int(tokens * kept_for_backward), int(tokens * recomputed), int(teacher))

    # without distillation blocks leave the tensors at every pruning step: the last one finds the model nearly cut
    phases = [phase("tuning", None, adapters0, ranks0, False),
              phase("pruning", None if settings.distill else kept, int(ratio * adapters0), ratio * ranks0,
                    settings.distill),
              phase("recovery", kept, int(ratio * adapters0), ratio * ranks0, False)]
    inference = {name: _inference_bytes(arch, settings, sizes, params + other)
                 for name, sizes, params in (("dense", None, arch.budgeted_params), ("pruned", kept, cut))}
    return {"architecture": arch, "settings": settings, "kept": kept, "params_dense": arch.budgeted_params,
            "params_pruned": cut, "total_params_dense": arch.total_params, "total_params_pruned": cut + other,
            "phases": phases, "inference": inference,
            "peak": max(phases, key=lambda p: p.total)}


def _teacher_bytes(arch: Architecture, settings: PlanSettings, adapters: int, tokens: int) -> float:
    """Self-distillation's extra: the teacher's frozen adapter copy, the layer transform (identity weight in
    the base dtype, a float32 LoRA with its gradients and AdamW moments) and what the distilled layers' loss
    keeps per token (the transform's input and the squared difference); for token logits also the KL's
    log-probabilities."""
    transform = arch.hidden * arch.hidden * BYTES[settings.dtype] + 16 * 2 * arch.hidden * TRANSFORM_RANK
    per_token = 2 * TEACHER_BLOCKS * arch.hidden * BYTES[settings.dtype]
    if arch.head == "causal-lm":
        per_token += 2 * 4 * arch.vocab
    return 4 * adapters + transform + tokens * per_token


def _recovery_teacher_bytes(arch: Architecture, settings: PlanSettings, tokens: int) -> float:
    """Distillation from the unpruned model (docs/method.md §F2): its merged weights, held for the whole run,
    and, for token logits, the teacher's logits in the base dtype with the KL's float32 log-probabilities of
    both sides and the teacher's probabilities. Not checked against the measure, which counts the trained model's
    tensors only."""
    per_token = (BYTES[settings.dtype] + 3 * 4) * arch.vocab if arch.head == "causal-lm" else 0
    return arch.total_params * BYTES[settings.dtype] + tokens * per_token


def _inference_bytes(arch: Architecture, settings: PlanSettings, kept: dict | None, params: int) -> dict:
    """Weights plus the peak of a forward pass: the residual stream and a normed copy, beside the larger of the
    attention block (q, k, v, out) and the FFN block (its one or three FFN-wide tensors); plus the logits."""
    act = BYTES[settings.dtype]
    tokens = settings.batch_size * settings.seq_len
    peak = 0
    for heads, kv_heads, ffn, hidden in _layer_shapes(arch, kept):
        attention = 2 * heads * arch.head_dim + 2 * kv_heads * arch.head_dim
        feed_forward = (3 if arch.gated_ffn else 2) * ffn
        peak = max(peak, act * tokens * (2 * hidden + max(attention, feed_forward)))
    if arch.head == "causal-lm":
        peak += act * tokens * arch.vocab
    weights = params * BYTES[settings.dtype]
    return {"weights": weights, "activations": peak, "total": weights + peak}


# ----------------------------------------------------------------------------- checking against the measure


def apply_even_cut(apt: APTModel, density: float, budget_ratio: float = 4.0) -> None:
    """Make a real model what the plan's recovery phase assumes: the same share of KV groups and FFN neurons cut
    from every layer (the first ones kept), the adapters grown evenly to ``budget_ratio`` x their parameters."""
    budget = int(budget_ratio * tuning_params(apt))
    kept = even_cut(apt, density)
    state = apt.state

    def first(n: int, size: int) -> torch.Tensor:
        return (torch.arange(size) < n).float()

    state.set_masks(heads={n: first(kept["heads"][n], len(m)) for n, m in state.heads.items()},
                    ffn={n: first(kept["ffn"][n], len(m)) for n, m in state.ffn.items()})
    apt.prune()
    grow_ranks(apt, {}, budget, strategy="uniform")


def full_batch(head: str, batch_size: int, seq_len: int, vocab: int = 1000) -> dict:
    """Random token ids with no padding (what the plan assumes), with labels for ``head``."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
    labels = ids if head == "causal-lm" else torch.randint(0, 2, (batch_size,), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long), "labels": labels}


def measure_step(apt: APTModel, batch: dict) -> dict:
    """The deterministic training memory (``bench.memory``) of one APT step on ``batch``: task loss, AdamW."""
    apt.train()
    method = APT(apt, APTConfig(), total_steps=1000)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
    memory = TrainingMemory(apt)
    with memory.watch() as saved:
        loss = method.compute_loss(batch).loss
    loss.backward()
    optimizer.step()
    return memory.record(1, saved, optimizer).as_dict()


def check(load, head: str, settings: PlanSettings) -> list[dict]:
    """Planned against measured bytes on a real model (``load()`` returns a fresh ``APTModel`` in the planned
    dtype): the dense step, the step cut to the density (ranks at the budget), and the dense forward pass."""
    meta = build_on_meta(load().model.config, head, settings.targets, settings.rank)
    p = plan(meta, describe(meta, head), settings)
    tuning, recovery = p["phases"][0], p["phases"][2]
    batch = full_batch(head, settings.batch_size, settings.seq_len)

    def fresh() -> APTModel:
        model = load()
        if settings.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model

    # the measure counts what the forward keeps for backward, not the layer recomputed during backward
    measured = measure_step(fresh(), batch)
    rows = [_row("training step, dense: activations", tuning.activations, measured["activations_bytes"]),
            _row("training step, dense: total", tuning.total - tuning.recomputed, measured["total_bytes"])]
    cut = fresh()
    apply_even_cut(cut, settings.density, settings.budget_ratio)
    measured = measure_step(cut, batch)
    rows += [_row("training step, cut: activations", recovery.activations, measured["activations_bytes"]),
             _row("training step, cut: total", recovery.total - recovery.recomputed, measured["total_bytes"])]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    rows.append(_row("inference, dense: activations", p["inference"]["dense"]["activations"],
                     peak_forward_bytes(load().merged_model(), inputs)))
    return rows


def _row(what: str, planned: float, measured: float) -> dict:
    return {"what": what, "planned": int(planned), "measured": int(measured), "error": planned / measured - 1}
