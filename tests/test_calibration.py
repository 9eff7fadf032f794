"""The calibration passes of a cut before tuning (``APT.calibrate``) freeze every trainable tensor: the salience
comes out as with trainable adapters, to the bit, and autograd keeps less for backward."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_inputs, tiny_llama

from aptune import APT, APTModel
from aptune.bench.memory import SavedActivations
from aptune.config import APTConfig, PruneConfig
from aptune.distill.self_distill import DistillConfig
from aptune.model import AdapterConfig

ALL_LINEARS = ["q", "k", "v", "o", "gate", "up", "down"]


def _apt(salience: str) -> APT:
    torch.manual_seed(0)
    model = APTModel(tiny_llama(), AdapterConfig(ALL_LINEARS, rank=4), seed=0)
    with torch.no_grad():  # trained-looking adapters (B != 0), so that their branches carry gradient
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn_like(parameter) * 0.1)
    config = APTConfig(prune=PruneConfig(density=0.6, salience=salience, before_tuning=True, calibration_batches=2,
                                         start_step=1, num_steps=1, end_fraction=0.5),
                       distill=DistillConfig(enabled=False))
    return APT(model, config, total_steps=8)


def _batches() -> list[dict[str, torch.Tensor]]:
    batches = []
    for seed in (1, 2):
        batch = tiny_inputs("llama", batch=2, length=7, seed=seed)
        batches.append({**batch, "labels": batch["input_ids"].clone()})
    return batches


@pytest.mark.parametrize("salience", ["apt", "weight_gradient"])
def test_frozen_calibration_gives_the_scores_of_trainable_adapters_and_restores_them(salience):
    frozen, reference = _apt(salience), _apt(salience)
    for batch in _batches():  # the reference: the same passes with every adapter asking for its gradient
        reference.model(**batch).loss.backward()
        reference.scorer.update()
    trainable = {n for n, p in frozen.model.named_parameters() if p.requires_grad}

    assert list(frozen.calibrate(_batches(), 2)) == [1, 2]
    expected, got = reference.scorer.scores(), frozen.scorer.scores()
    for kind in ("heads", "ffn"):
        for name in expected[kind]:
            assert torch.equal(got[kind][name], expected[kind][name]), (kind, name)  # to the bit
    assert torch.equal(got["hidden"], expected["hidden"])
    assert {n for n, p in frozen.model.named_parameters() if p.requires_grad} == trainable
    assert all(p.grad is None for p in frozen.model.parameters())


def test_frozen_calibration_keeps_less_for_backward():
    apt = _apt("apt")
    batch = _batches()[0]
    trainable = SavedActivations(apt.model)
    with trainable.watch():
        apt.model(**copy.deepcopy(batch)).loss.backward()
    apt.model.zero_grad(set_to_none=True)
    frozen = SavedActivations(apt.model)
    with frozen.watch():
        next(apt.calibrate([batch], 1))
    # per layer, the inputs of o and down and the normed inputs the other five linears share, and every
    # adapter's rank-4 intermediate, are no longer kept
    assert frozen.bytes < 0.8 * trainable.bytes
