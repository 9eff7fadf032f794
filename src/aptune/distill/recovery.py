"""Knowledge distillation from the unpruned model while a model cut before tuning recovers (docs/method.md §F2).

The paper's large-model setting cuts once, before any tuning, and then tunes the cut model on the task loss
alone. At small scale the cut costs a lot (SmolLM2-135M at 70%: held-out loss 2.82 against 1.72 untuned) and
the task data is small (899 instructions), so the model the cut came from offers a richer target: its full
next-token distribution at every answer token, not only the one label. Whether that pays is measured in the
README ("Recovery at small scale"): with adapters on q and v only, it did not by step 100.

    L = w·L_kd + (1−w)·L_CE,      L_kd = τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ))   on the label positions

With ``hidden_weight`` β > 0 the student also matches the teacher's hidden states after every decoder layer, at
every real token (prompt included), as their relative squared error; the loss becomes

    L = w·L_kd + (1−w)·L_CE + β·L_hidden,    L_hidden = mean over layers and tokens of ‖h_s − h_t‖² / ‖h_t‖²

(the teacher's hidden dimensions that the cut kept, when it cut the hidden size). Relative per token, so that
the few tokens with massive activations (a decoder's first token) weigh no more than the rest.

The teacher (``teacher=dense``) is a frozen, merged copy of the model as the method receives it (dense, its
adapters as they are, zero at the start), taken before the cut: a second model in memory (the dense weights, no
gradients, no saved activations) and one no-grad forward pass per step. With ``teacher=model`` it is a saved causal
LM instead (``teacher_model``: a folder or a name :func:`aptune.models.load_model` reads), e.g. the dense model
already tuned on the task, as CoFi distils from a fine-tuned teacher (docs/method.md §F6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aptune.distill.self_distill import prediction_loss
from aptune.models import load_model
from aptune.models.lm_loss import IGNORE, next_token_targets

TEACHERS = ("none", "dense", "model")


@dataclass
class RecoveryConfig:
    """Distillation from the unpruned model, or a saved one, after a cut before tuning (``prune.before_tuning``).

    Attributes:
        teacher: ``none`` (tune on the task loss alone, the paper), ``dense`` (the model before the cut) or
            ``model`` (the saved model at ``teacher_model``).
        teacher_model: with ``teacher=model``: the folder (or a name ``load_model`` knows) of a causal LM with the
            student's vocabulary, e.g. the export of a dense run tuned on the same task.
        weight: w, the distillation loss's share of the loss (1: the teacher alone, no task labels).
        temperature: τ of the KL (1: the teacher's own distribution).
        hidden_weight: β, the weight of the hidden-state loss added to the mix (0: logits only).
    """

    teacher: str = "none"
    teacher_model: str | None = None
    weight: float = 0.5
    temperature: float = 1.0
    hidden_weight: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.teacher != "none"


def label_positions(labels: torch.Tensor, causal: bool) -> torch.Tensor | None:
    """Where the KL is taken: the positions whose prediction has a label (a causal LM's logits at t predict
    the token at t+1); None (every row) for a classifier's labels."""
    if labels is None or labels.dim() < 2:
        return None
    return (next_token_targets(labels) if causal else labels) != IGNORE


def load_teacher(path: str, student: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The saved causal LM at ``path``, frozen, in eval mode and ``dtype``, checked against ``student``: the KL
    compares the two next-token distributions entry by entry, so the vocabularies must be the same size."""
    try:
        teacher = load_model(path, head="causal-lm", dtype=dtype)
    except OSError as error:  # FileNotFoundError included: say which setting named the missing model
        raise FileNotFoundError(f"recover.teacher_model={path}: {error}") from error
    ours, theirs = _vocab_size(student), _vocab_size(teacher)
    if ours != theirs:
        raise ValueError(f"recover.teacher_model={path} predicts {theirs} tokens and the student {ours}: the teacher "
                         "must share the student's tokenizer (e.g. an export of a run on the same base model)")
    return teacher.requires_grad_(False)


def _vocab_size(model: torch.nn.Module) -> int:
    return model.get_output_embeddings().weight.shape[0]


def teacher_outputs(teacher: torch.nn.Module, batch: dict[str, torch.Tensor], hidden_states: bool = False):
    """The teacher's outputs for a training batch (no labels: its own loss is not needed)."""
    with torch.no_grad():
        return teacher(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=hidden_states)


def recovery_loss(student_logits: torch.Tensor, teacher_out: torch.Tensor, labels: torch.Tensor | None,
                  config: RecoveryConfig, causal: bool) -> torch.Tensor:
    """τ²·KL(teacher ‖ student), averaged over the label positions (float32 for low-precision logits)."""
    return prediction_loss(student_logits.float(), teacher_out.float(), config.temperature, 1.0,
                           label_positions(labels, causal))


def hidden_state_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                      attention_mask: torch.Tensor | None, kept_hidden: torch.Tensor | None) -> torch.Tensor:
    """Mean over the layers' outputs and the real tokens of ‖h_s − h_t‖² / ‖h_t‖² (float32).

    ``student`` and ``teacher`` are ``output_hidden_states`` tuples; the first entry (the embeddings, which the cut
    leaves as they were) is skipped. ``kept_hidden`` indexes the teacher's hidden dimensions that the cut kept
    (None: the hidden size was not cut)."""
    if len(student) != len(teacher):
        raise ValueError(f"the student has {len(student)} hidden states and the teacher {len(teacher)}: "
                         "hidden-state distillation needs every layer kept")
    per_layer = []
    for h_s, h_t in zip(student[1:], teacher[1:]):
        h_t = h_t.detach().float()
        if kept_hidden is not None:  # the index is made on the CPU, by the search
            h_t = h_t.index_select(-1, kept_hidden.to(h_t.device))
        if h_t.shape != h_s.shape:
            raise ValueError(f"a student hidden state has shape {tuple(h_s.shape)} and the teacher's kept "
                             f"dimensions {tuple(h_t.shape)}")
        error = (h_s.float() - h_t).pow(2).sum(-1) / h_t.pow(2).sum(-1).clamp_min(1e-12)
        per_layer.append(error)
    error = torch.stack(per_layer).mean(0)  # (batch, length)
    if attention_mask is None:
        return error.mean()
    real = attention_mask.to(error.dtype)
    return (error * real).sum() / real.sum().clamp_min(1.0)
