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

Defaults: the teacher runs on the unpruned backbone (``dense_teacher``) with the official code's loss for
classification (τ = 2/3, KL ×10, c_pred 0.1, c_layer 0.9): of the variants measured on the main recipe
(README, "Self-distillation on the main recipe") it is the one that comes level with training without a
teacher; a teacher on the already-cut backbone cost about 2.4 points. :meth:`DistillConfig.paper` gives the
paper's loss (addendum: τ = 4, L_pred + 0.9·L_layer) and the teacher on the cut backbone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aptune.adapters.layer import APTLinear


@dataclass
class DistillConfig:
    """Teacher and loss settings (config; defaults: see the module docstring).

    Attributes:
        enabled: use self-distillation at all (the `no_self_distillation` ablation turns it off).
        temperature: τ of the prediction KL (official code 2/3; paper/addendum 4).
        pred_weight: c_pred.
        layer_weight: c_layer.
        kl_scale: constant factor on the KL (official code: 10 for classification, 1 for token logits).
        num_blocks: teacher layers are drawn one per block of this many equal blocks.
        normalize_hidden: RMS-normalise hidden states before the MSE (official seq2seq/LLaMA trainer).
        transform_rank: LoRA rank of Tr.
        teacher_masks: the teacher sees the student's current masks (official encoder trainer) or not.
        dense_teacher: the teacher runs on the unpruned backbone: while distilling, pruning steps only make the
            student's masks binary, the blocks are cut from the tensors at the last pruning step (when
            distillation ends), and the teacher pass ignores the masks. The official code's teacher likewise
            keeps blocks the student has lost until a refresh; pruning then pays only after the window.
        max_mu: cap on μ, so that the task loss keeps a weight of at least 1 − max_mu.
        teacher: ``best``: a frozen snapshot of the adapters, taken at the first pruning step and refreshed on
            every new best dev score (the paper, the official code); ``live``: the student's own current adapters
            (no snapshot), so that with ``dense_teacher`` the pruned student learns from its unpruned self.
        end_fraction: where distillation ends, as a fraction of the training steps. None: at the last pruning
            step, and recovery trains on the task loss alone. A later point keeps distilling through recovery
            with μ at ``max_mu`` (the official code distils for many epochs past its last pruning step with the
            best-so-far teacher); under ``dense_teacher`` the masked blocks then leave the tensors when
            distillation ends, not at the last pruning step.
    """

    enabled: bool = True
    temperature: float = 2.0 / 3.0
    pred_weight: float = 0.1
    layer_weight: float = 0.9
    kl_scale: float = 10.0
    num_blocks: int = 4
    normalize_hidden: bool = False
    transform_rank: int = 8
    teacher_masks: bool = True
    dense_teacher: bool = True
    max_mu: float = 1.0
    teacher: str = "best"
    end_fraction: float | None = None

    def __post_init__(self):
        if self.teacher not in ("best", "live"):
            raise ValueError(f"distill.teacher must be best or live; got {self.teacher!r}")

    @classmethod
    def official_code(cls, classification: bool = True) -> "DistillConfig":
        """The official code's loss: τ = 2/3, KL ×10 for classification (×1 and RMS-normalised hidden states for
        token logits), (0.1, 0.9) weights; the teacher on the unpruned backbone."""
        return cls(temperature=2.0 / 3.0, pred_weight=0.1, layer_weight=0.9,
                   kl_scale=10.0 if classification else 1.0, normalize_hidden=not classification)

    @classmethod
    def paper(cls) -> "DistillConfig":
        """The paper's loss (addendum: τ = 4, L_pred + 0.9·L_layer) and aptune's first teacher: the snapshot on
        the backbone as cut so far, seeing the student's masks."""
        return cls(temperature=4.0, pred_weight=1.0, layer_weight=0.9, kl_scale=1.0, dense_teacher=False)


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


def sample_teacher_layers(num_layers: int, num_blocks: int = 4, generator: torch.Generator | None = None) -> list[int]:
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


def _rms_normalized(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def layer_loss(student_states, teacher_states, mapping: dict[int, int], transform: nn.Module | None = None,
               mask: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
    """Σ_t MSE(Tr(H_s[φ(t)]), H_t[t]) over the mapped teacher layers (mean over tokens and dims).

    Args:
        student_states, teacher_states: per-layer hidden states (``layer_states``).
        mapping: φ, teacher layer → student layer.
        transform: Tr (None = identity).
        mask: (batch, tokens) padding mask; padded tokens are left out of the mean.
        normalize: RMS-normalise both sides first.
    """
    total = None
    for t, s in mapping.items():
        student = student_states[s]
        if transform is not None:
            student = transform(student)
        teacher = teacher_states[t].detach().to(student.dtype)
        if normalize:
            student, teacher = _rms_normalized(student), _rms_normalized(teacher)
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


def distill_loss(student_out, teacher_out, apt_model, config: DistillConfig, transform: nn.Module | None = None,
                 generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None,
                 logits_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_distill = c_pred·L_pred + c_layer·L_layer for one batch; returns (loss, logged parts).

    Teacher layers are drawn afresh (one per block, per stack) and mapped onto surviving student layers.
    Both outputs must come from calls with ``output_hidden_states=True``.
    """
    pred = prediction_loss(student_out.logits, teacher_out.logits, config.temperature, config.kl_scale, logits_mask)
    parts = {"distill_pred": float(pred.detach())}
    total = config.pred_weight * pred
    if config.layer_weight:
        alive = surviving_layers(apt_model)
        layer_total, stacks_used = None, 0
        for stack, count in layer_stacks(apt_model.family).items():
            mapping = map_layers(sample_teacher_layers(count, config.num_blocks, generator), alive.get(stack, []))
            if not mapping:
                continue
            stack_mask = attention_mask if stack != "decoder" else None
            loss = layer_loss(layer_states(student_out, stack), layer_states(teacher_out, stack), mapping,
                              transform, stack_mask, config.normalize_hidden)
            parts[f"distill_layer{'_' + stack if stack else ''}"] = float(loss.detach())
            layer_total = loss if layer_total is None else layer_total + loss
            stacks_used += 1
        if layer_total is not None:
            # encoder-decoders: the stacks' layer losses are averaged (official seq2seq trainer)
            total = total + config.layer_weight * layer_total / stacks_used
    parts["distill"] = float(total.detach())
    return total, parts


def mixed_loss(ce: torch.Tensor, distill: torch.Tensor, mu: float) -> torch.Tensor:
    """μ·L_distill + (1−μ)·L_CE."""
    return mu * distill + (1.0 - mu) * ce
