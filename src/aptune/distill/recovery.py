"""Knowledge distillation from the unpruned model while a model cut before tuning recovers (docs/method.md §F2).

The paper's large-model setting cuts once, before any tuning, and then tunes the cut model on the task loss
alone. At small scale the cut costs a lot (SmolLM2-135M at 70%: held-out loss 2.82 against 1.72 untuned) and
the task data is small (899 instructions), so the model the cut came from offers a richer target: its full
next-token distribution at every answer token, not only the one label. Whether that pays is measured in the
README ("Recovery at small scale"): with adapters on q and v only, it did not by step 100.

    L = w·L_kd + (1−w)·L_CE,      L_kd = τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ))   on the label positions

The teacher (``teacher=dense``) is a frozen, merged copy of the model as the method receives it (dense, its
adapters as they are, zero at the start), taken before the cut: a second model in memory (the dense weights, no
gradients, no saved activations) and one no-grad forward pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aptune.distill.self_distill import prediction_loss
from aptune.models.lm_loss import IGNORE, next_token_targets

TEACHERS = ("none", "dense")


@dataclass
class RecoveryConfig:
    """Distillation from the unpruned model after a cut before tuning (``prune.before_tuning``).

    Attributes:
        teacher: ``none`` (tune on the task loss alone, the paper) or ``dense`` (the model before the cut).
        weight: w, the distillation loss's share of the loss (1: the teacher alone, no task labels).
        temperature: τ of the KL (1: the teacher's own distribution).
    """

    teacher: str = "none"
    weight: float = 0.5
    temperature: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.teacher != "none"


def label_positions(labels: torch.Tensor, causal: bool) -> torch.Tensor | None:
    """Where the KL is taken: the positions whose prediction has a label (a causal LM's logits at t predict
    the token at t+1); None (every row) for a classifier's labels."""
    if labels is None or labels.dim() < 2:
        return None
    return (next_token_targets(labels) if causal else labels) != IGNORE


def teacher_outputs(teacher: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """The teacher's outputs for a training batch (no labels: its own loss is not needed)."""
    with torch.no_grad():
        return teacher(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=False)


def recovery_loss(student_logits: torch.Tensor, teacher_out: torch.Tensor, labels: torch.Tensor | None,
                  config: RecoveryConfig, causal: bool) -> torch.Tensor:
    """τ²·KL(teacher ‖ student), averaged over the label positions (float32 for low-precision logits)."""
    return prediction_loss(student_logits.float(), teacher_out.float(), config.temperature, 1.0,
                           label_positions(labels, causal))
