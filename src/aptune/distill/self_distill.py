"""Self-distillation helpers (docs/method.md §F): the teacher is the model itself with a frozen snapshot
of its adapters over the shared frozen backbone, so it costs one extra no-grad forward pass and a copy
of the adapter weights, never a second model.

    L = μ·L_distill + (1−μ)·L_CE,     L_distill = c_pred·L_pred + c_layer·L_layer
    L_pred  = scale·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ))
    L_layer = Σ_{i∈T} MSE(Tr(H_s^{φ(i)}), H_t^i)

* T: one teacher layer drawn per block of layers each step (RAIL-KD, 4 blocks);
* φ: teacher layer → the nearest student layer that still has attention and an FFN (by index distance,
  the lower layer on a tie; the official code breaks ties by the lower MSE);
* Tr: a d_m×d_m transform initialised to the identity and trained, an ``APTLinear`` with a frozen
  identity weight and a LoRA (as the official code), so it is cut along with hidden dimensions and its
  rank can grow like any adapter.

The teacher runs on the unpruned backbone with the official code's loss for classification (τ = 2/3, KL ×10,
c_pred 0.1, c_layer 0.9): the constants below. Self-distillation is off by default (``DistillConfig``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aptune.adapters.layer import APTLinear


# The loss and teacher are the official code's for classification, the variant that measured best on the main
# recipe (results/distillation/README.md). Eight other teachers and losses were measured against it (the paper's
# τ = 4 loss, the teacher on the cut backbone, a live teacher, distilling through recovery, a capped μ, each loss
# term alone) and none did better, so they are constants here, not options.
TEMPERATURE = 2.0 / 3.0  # τ of the prediction KL (official code 2/3; paper/addendum 4)
PRED_WEIGHT = 0.1  # c_pred
LAYER_WEIGHT = 0.9  # c_layer
KL_SCALE = 10.0  # constant factor on the KL (official code: 10 for classification)
TEACHER_BLOCKS = 4  # teacher layers are drawn one per block of this many equal blocks (RAIL-KD)
TRANSFORM_RANK = 8  # LoRA rank of Tr


@dataclass
class DistillConfig:
    """Self-distillation (docs/method.md §F).

    Attributes:
        enabled: distil from a frozen snapshot of the adapters over the unpruned backbone while pruning. Off by
            default: on the budgets measured it cost accuracy (SST-2, three seeds: +1.1 points [+0.4, +1.9] without
            it); :meth:`aptune.APTConfig.paper` turns it on, as the paper's full method has it.

        refresh: when the teacher is renewed. ``best``: a snapshot of the adapters taken at the first pruning
            step and again at every new best dev score; it runs on the unpruned backbone with the masks off, so it
            is not the model that was scored. ``decay_start`` (the official code's): the dev set is scored at the
            start of each mask decay before a pruning step, and on a new best among those scores the adapters are
            snapshotted; the teacher runs with the student's masks, so at a refresh it is the model just scored.
        retrain_from: None, or a fraction of ``train.steps`` after the last pruning step (the official code's end
            of distillation): distil with μ = 1 from the last pruning step to there, then reload the adapters of
            the best dev score since the last pruning step and train on the task loss alone at 0.1x ``train.lr``,
            with a fresh warm-up (6%) and linear decay. None: distillation ends at the last pruning step and
            training goes on under the run's own schedule.

    With ``refresh=best`` the teacher runs on the unpruned backbone: while distilling, pruning steps only make the
    student's masks binary, the blocks are cut from the tensors at the last pruning step (when distillation ends),
    and the teacher pass ignores the masks. With ``refresh=decay_start`` blocks leave at every pruning step, as
    without distillation.
    """

    enabled: bool = False
    refresh: str = "best"
    retrain_from: float | None = None


REFRESHES = ("best", "decay_start")


# ------------------------------------------------------------------------------------- teacher


def snapshot_teacher(apt_model) -> None:
    """Freeze a copy of every adapter (``APTLinear.snapshot_teacher``): the teacher from now on."""
    for module in apt_model.adapters().values():
        module.snapshot_teacher()


@contextmanager
def teacher_mode(apt_model, masks: bool = True, eval_mode: bool = True):
    """Run the teacher: every adapter uses its frozen snapshot, under ``torch.no_grad``.

    Adapters without a snapshot use their live weights (``APTLinear`` falls back to them). The shared
    task head is the student's (it is not part of the snapshot).

    Args:
        masks: apply the student's current masks (else all-ones masks for the teacher pass; physically
            cut structures are gone for both).
        eval_mode: switch dropout off for the teacher pass (the modules' modes are restored after).
    """
    linears = [m for m in apt_model.modules() if isinstance(m, APTLinear)]
    modes = {m: m.training for m in apt_model.modules()}
    state = apt_model.state
    saved = (state.heads, state.ffn, state.hidden)
    try:
        for linear in linears:
            linear.use_teacher = True
        if eval_mode:
            apt_model.eval()
        if not masks:
            state.heads = {n: torch.ones_like(m) for n, m in state.heads.items()}
            state.ffn = {n: torch.ones_like(m) for n, m in state.ffn.items()}
            state.hidden = torch.ones_like(state.hidden)
        with torch.no_grad():
            yield apt_model
    finally:
        for linear in linears:
            linear.use_teacher = False
        for module, mode in modes.items():
            module.training = mode
        state.heads, state.ffn, state.hidden = saved


# ---------------------------------------------------------------------------- layer transform


class LayerTransform(nn.Module):
    """Tr: identity-initialised, trainable d_m → d_m map applied to student hidden states.

    A frozen identity weight plus a LoRA of rank ``rank`` (B = 0, so Tr = identity at the start). It
    follows hidden-dimension cuts through :meth:`sync`; run that inside ``OptimizerSurgery`` together
    with the model's cut so its AdamW state follows too.
    """

    def __init__(self, apt_model, rank: int = 8, scaling: float = 2.0):
        super().__init__()
        state = apt_model.state
        size = len(state.hidden)
        ref = next(apt_model.model.parameters())
        base = nn.Linear(size, size, bias=False, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            base.weight.copy_(torch.eye(size, device=ref.device, dtype=ref.dtype))
        self.linear = APTLinear(base, rank=rank, scaling=scaling)
        self.linear.lora_A.requires_grad_(True)
        self.linear.lora_B.requires_grad_(True)
        self.register_buffer("hidden_index", state.hidden_index.clone(), persistent=False)
        object.__setattr__(self, "_state", state)  # shared, not a submodule

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)

    def sync(self) -> bool:
        """Cut to the model's surviving hidden dimensions; True if anything was cut."""
        new = self._state.hidden_index
        if len(new) == len(self.hidden_index) and torch.equal(new, self.hidden_index.to(new.device)):
            return False
        keep = torch.nonzero(torch.isin(self.hidden_index.cpu(), new.cpu()), as_tuple=False).flatten()
        self.linear.prune_inputs(keep)
        self.linear.prune_outputs(keep)
        self.hidden_index = new.clone()
        return True


# ------------------------------------------------------------------------------- layer mapping


def layer_stacks(family) -> dict[str, int]:
    """Number of transformer layers per stack ("" for single-stack models, "encoder"/"decoder" for T5)."""
    stacks: dict[str, int] = {}
    for site in list(family.attention_sites) + list(family.ffn_sites):
        stacks[site.stack] = max(stacks.get(site.stack, 0), site.layer + 1)
    return stacks


def surviving_layers(apt_model) -> dict[str, list[int]]:
    """Per stack, the layers that still have an attention block (any of its attention sites with a
    non-zero head mask) and an FFN (a non-zero neuron): the only ones a teacher layer may map to."""
    state, family = apt_model.state, apt_model.family
    has_attention: dict[tuple[str, int], bool] = {}
    has_ffn: dict[tuple[str, int], bool] = {}
    for site in family.attention_sites:
        key = (site.stack, site.layer)
        has_attention[key] = has_attention.get(key, False) or bool((state.heads[site.name] > 0).any())
    for site in family.ffn_sites:
        has_ffn[(site.stack, site.layer)] = bool((state.ffn[site.name] > 0).any())
    out: dict[str, list[int]] = {stack: [] for stack in layer_stacks(family)}
    for (stack, layer), attention in sorted(has_attention.items()):
        if attention and has_ffn.get((stack, layer), False):
            out[stack].append(layer)
    return out


def map_layers(teacher_layers: list[int], alive: list[int]) -> dict[int, int]:
    """φ: each teacher layer → the nearest surviving student layer (lower one on ties); empty if none."""
    if not alive:
        return {}
    return {t: min(alive, key=lambda s: (abs(s - t), s)) for t in teacher_layers}


def sample_teacher_layers(num_layers: int, num_blocks: int = TEACHER_BLOCKS, generator: torch.Generator | None = None) -> list[int]:
    """One teacher layer drawn uniformly in each of ``num_blocks`` near-equal blocks of layers (RAIL-KD)."""
    blocks = max(1, min(num_blocks, num_layers))
    bounds = torch.linspace(0, num_layers, blocks + 1).round().long().tolist()
    layers = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            layers.append(lo + int(torch.randint(hi - lo, (1,), generator=generator)))
    return layers


def layer_states(outputs, stack: str) -> tuple[torch.Tensor, ...]:
    """Per-layer hidden states of a stack from a model output (``output_hidden_states=True``),
    embeddings excluded: element i is the output of layer i."""
    key = {"": "hidden_states", "encoder": "encoder_hidden_states", "decoder": "decoder_hidden_states"}[stack]
    states = getattr(outputs, key, None)
    if states is None:
        raise ValueError(f"the model output has no {key}; call the model with output_hidden_states=True")
    return tuple(states[1:])


# ------------------------------------------------------------------------------------- losses


def prediction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
                    scale: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """scale·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ)).

    Classification logits (batch, classes): mean over the batch. Token logits (batch, tokens, vocab):
    summed over the vocabulary, averaged over the tokens where ``mask`` is non-zero (all if None).
    A single output (regression) uses the MSE between the logits instead (a KL has no meaning there).
    """
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    if student_logits.shape[-1] == 1:
        return scale * F.mse_loss(student_logits, teacher_logits)
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    per_row = (log_t.exp() * (log_t - log_s)).sum(-1)
    if mask is not None:
        weights = mask.to(per_row.dtype)
        kl = (per_row * weights).sum() / weights.sum().clamp_min(1.0)
    else:
        kl = per_row.mean()
    return scale * temperature**2 * kl


def layer_loss(student_states, teacher_states, mapping: dict[int, int], transform: nn.Module | None = None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_t MSE(Tr(H_s[φ(t)]), H_t[t]) over the mapped teacher layers (mean over tokens and dims).

    Args:
        student_states, teacher_states: per-layer hidden states (``layer_states``).
        mapping: φ, teacher layer → student layer.
        transform: Tr (None = identity).
        mask: (batch, tokens) padding mask; padded tokens are left out of the mean.
    """
    total = None
    for t, s in mapping.items():
        student = student_states[s]
        if transform is not None:
            student = transform(student)
        teacher = teacher_states[t].detach().to(student.dtype)
        squared = (student - teacher).pow(2)
        if mask is not None and tuple(mask.shape) == tuple(squared.shape[:-1]):
            weights = mask.to(squared.dtype)[..., None]
            loss = (squared * weights).sum() / (weights.sum() * squared.shape[-1]).clamp_min(1.0)
        else:
            loss = squared.mean()
        total = loss if total is None else total + loss
    if total is None:
        reference = next(iter(student_states), None)
        return torch.zeros((), device=None if reference is None else reference.device)
    return total


def distill_loss(student_out, teacher_out, apt_model, transform: nn.Module | None = None,
                 generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None,
                 logits_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_distill = c_pred·L_pred + c_layer·L_layer for one batch; returns (loss, logged parts).

    Teacher layers are drawn afresh (one per block, per stack) and mapped onto surviving student layers.
    Both outputs must come from calls with ``output_hidden_states=True``.
    """
    pred = prediction_loss(student_out.logits, teacher_out.logits, TEMPERATURE, KL_SCALE, logits_mask)
    parts = {"distill_pred": float(pred.detach())}
    total = PRED_WEIGHT * pred
    alive = surviving_layers(apt_model)
    layer_total, stacks_used = None, 0
    for stack, count in layer_stacks(apt_model.family).items():
        mapping = map_layers(sample_teacher_layers(count, TEACHER_BLOCKS, generator), alive.get(stack, []))
        if not mapping:
            continue
        stack_mask = attention_mask if stack != "decoder" else None
        loss = layer_loss(layer_states(student_out, stack), layer_states(teacher_out, stack), mapping,
                          transform, stack_mask)
        parts[f"distill_layer{'_' + stack if stack else ''}"] = float(loss.detach())
        layer_total = loss if layer_total is None else layer_total + loss
        stacks_used += 1
    if layer_total is not None:
        # encoder-decoders: the stacks' layer losses are averaged (official seq2seq trainer)
        total = total + LAYER_WEIGHT * layer_total / stacks_used
    parts["distill"] = float(total.detach())
    return total, parts


def mixed_loss(ce: torch.Tensor, distill: torch.Tensor, mu: float) -> torch.Tensor:
    """μ·L_distill + (1−μ)·L_CE."""
    return mu * distill + (1.0 - mu) * ce
