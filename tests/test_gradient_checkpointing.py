"""Gradient checkpointing (transformers' own, non-reentrant) recomputes each layer's forward during backward;
the APT hooks must still observe every step once: the same salience, masks and ranks as without it, with fewer
activations saved."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert, tiny_inputs, tiny_llama

from aptune.bench.memory import SavedActivations
from aptune.config import APTConfig, PruneConfig
from aptune.method import APT
from aptune.model import APTModel

MAKE = {"bert": tiny_bert, "llama": tiny_llama}
STEPS = 8


def batch(kind: str, step: int) -> dict:
    inputs = tiny_inputs(kind, batch=4, length=9, seed=step)
    inputs["labels"] = inputs["input_ids"] if kind == "llama" else torch.tensor([0, 1, 2, 1])
    return inputs


def short_apt_run(kind: str, checkpointing: bool) -> dict:
    """Eight steps with two pruning steps; the salience after every collecting step, the final masks and ranks,
    and the activation bytes the first step saved for backward."""
    torch.manual_seed(0)
    model = APTModel(MAKE[kind](), seed=0)
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    prune = PruneConfig(density=0.5, start_step=2, num_steps=2, end_fraction=0.75, warmup_fraction=0, mask_lr=0.5)
    apt = APT(model, APTConfig(prune=prune), total_steps=STEPS, seed=0)
    optimizer = torch.optim.AdamW(apt.trainable_parameters(), lr=1e-3)
    scores, saved_bytes = [], []
    for step in range(STEPS):
        with SavedActivations(model).watch() as saved:
            loss = apt.compute_loss(batch(kind, step)).loss
        saved_bytes.append(saved.bytes)
        loss.backward()
        apt.after_backward()
        if apt.collecting():
            scores.append(apt.scorer.scores())
        optimizer.step()
        apt.zero_grad()
        apt.after_optimizer_step(optimizer)
    return {"scores": scores, "masks": model.state.keep_masks(), "ranks": model.ranks(), "saved": saved_bytes[0],
            "density": apt.density()}


def flat(scores: dict) -> torch.Tensor:
    return torch.cat([flat(v) if isinstance(v, dict) else v.reshape(-1) for _, v in sorted(scores.items())])


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_checkpointing_changes_no_salience_mask_or_rank(kind):
    plain, checkpointed = short_apt_run(kind, False), short_apt_run(kind, True)
    assert checkpointed["saved"] < plain["saved"]  # checkpointing is on: fewer activations kept for backward
    assert len(plain["scores"]) == len(checkpointed["scores"]) > 0
    for a, b in zip(plain["scores"], checkpointed["scores"]):
        # observed once per step: twice would double every score
        assert torch.allclose(flat(a), flat(b), rtol=1e-5, atol=1e-12)
    assert plain["masks"] == checkpointed["masks"]
    assert plain["ranks"] == checkpointed["ranks"]
    assert plain["density"] <= 0.5  # a real cut happened


def test_a_model_without_checkpointing_support_is_refused():
    model = APTModel(tiny_bert(), seed=0)
    model.model.supports_gradient_checkpointing = False
    with pytest.raises(ValueError, match="train.gradient_checkpointing=false"):
        model.enable_gradient_checkpointing()
