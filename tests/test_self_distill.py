"""Self-distillation: teacher mode, layer mapping, losses, the layer transform."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, random_binary_masks, randomize_adapters, tiny_inputs

from aptune.adapters.layer import APTLinear
from aptune.distill import (
    LayerTransform,
    distill_loss,
    layer_loss,
    map_layers,
    mixed_loss,
    prediction_loss,
    sample_teacher_layers,
    snapshot_teacher,
    surviving_layers,
    teacher_mode,
)
from aptune.model import APTModel


def make(kind):
    apt = APTModel(TINY[kind](), seed=0)
    randomize_adapters(apt)
    return apt


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
def test_teacher_with_a_fresh_snapshot_gives_the_student_logits(kind):
    apt = make(kind)
    apt.eval()
    inputs = tiny_inputs(kind)
    snapshot_teacher(apt)
    with torch.no_grad():
        student = apt(**inputs).logits
    with teacher_mode(apt):
        teacher = apt(**inputs).logits
    assert torch.equal(teacher, student)
    assert not teacher.requires_grad
    # the student moves on; the teacher stays where the snapshot was taken
    randomize_adapters(apt, seed=7, scale=0.2)
    with torch.no_grad():
        moved = apt(**inputs).logits
    with teacher_mode(apt):
        still = apt(**inputs).logits
    assert not torch.allclose(moved, student) and torch.equal(still, student)


def test_teacher_mode_restores_flags_modes_and_masks():
    apt = make("llama")
    apt.train()
    random_binary_masks(apt, seed=1, empty_site=False)
    masks = (dict(apt.state.heads), apt.state.hidden.clone())
    snapshot_teacher(apt)
    inputs = tiny_inputs("llama")
    with teacher_mode(apt, masks=False):
        assert not apt.training
        assert all(m.use_teacher for m in apt.modules() if isinstance(m, APTLinear))
        unmasked = apt(**inputs).logits
    assert apt.training and not any(m.use_teacher for m in apt.modules() if isinstance(m, APTLinear))
    assert all(torch.equal(apt.state.heads[n], m) for n, m in masks[0].items())
    assert torch.equal(apt.state.hidden, masks[1])
    with teacher_mode(apt):
        masked = apt(**inputs).logits
    assert not torch.allclose(masked, unmasked)
    saved = apt.state
    apt.state.set_masks(hidden=torch.ones_like(apt.state.hidden))
    apt.state.set_masks(heads={n: torch.ones_like(m) for n, m in apt.state.heads.items()},
                        ffn={n: torch.ones_like(m) for n, m in apt.state.ffn.items()})
    with teacher_mode(apt):
        assert torch.equal(apt(**inputs).logits, unmasked)
    assert saved is apt.state


def test_prediction_loss_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    tau = 2.0
    p_t = torch.softmax(teacher / tau, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / tau, -1))).sum(-1).mean()
    assert prediction_loss(student, teacher, tau).item() == pytest.approx(tau**2 * kl.item(), rel=1e-5)
    assert prediction_loss(student, teacher, tau, scale=10).item() == pytest.approx(10 * tau**2 * kl.item(), rel=1e-5)
    assert prediction_loss(teacher, teacher, tau).item() == pytest.approx(0, abs=1e-7)
    # token logits: padding left out of the mean
    tokens_s, tokens_t = student[None].repeat(2, 1, 1), teacher[None].repeat(2, 1, 1)
    tokens_s[1] += 5 * torch.randn(2, 3)
    mask = torch.tensor([[1, 1], [0, 0]])
    assert prediction_loss(tokens_s, tokens_t, tau, mask=mask).item() == pytest.approx(tau**2 * kl.item(), rel=1e-5)
    # regression: MSE
    assert prediction_loss(torch.ones(4, 1), torch.zeros(4, 1)).item() == 1.0


def test_layer_mapping_takes_the_nearest_surviving_layer():
    assert map_layers([0, 1, 2, 5], [0, 2, 4]) == {0: 0, 1: 0, 2: 2, 5: 4}
    assert map_layers([3], []) == {}
    apt = make("llama")
    name = apt.family.attention_sites[1].name
    apt.state.set_masks(heads={name: torch.zeros_like(apt.state.heads[name])})
    assert surviving_layers(apt) == {"": [0, 2]}
    ffn = apt.family.ffn_sites[2].name
    apt.state.set_masks(ffn={ffn: torch.zeros_like(apt.state.ffn[ffn])})
    assert surviving_layers(apt) == {"": [0]}
    t5 = make("t5")
    assert surviving_layers(t5) == {"encoder": [0, 1], "decoder": [0, 1]}


def test_teacher_layers_one_per_block():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        layers = sample_teacher_layers(12, 4, g)
        assert len(layers) == 4 and all(3 * b <= t < 3 * b + 3 for b, t in enumerate(layers))
    assert sorted(sample_teacher_layers(2, 4, g)) == [0, 1]


def test_layer_loss_and_identity_transform():
    apt = make("bert")
    transform = LayerTransform(apt)
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 5, 32, generator=g) for _ in range(3)]
    teacher = [torch.randn(2, 5, 32, generator=g) for _ in range(3)]
    assert torch.equal(transform(student[0]), student[0])  # identity at the start
    expected = torch.mean((student[0] - teacher[1]) ** 2) + torch.mean((student[2] - teacher[2]) ** 2)
    got = layer_loss(student, teacher, {1: 0, 2: 2}, transform)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    masked = layer_loss(student, teacher, {1: 0}, None, mask)
    m = mask[..., None].float()
    assert masked.item() == pytest.approx((((student[0] - teacher[1]) ** 2) * m).sum().item() / (m.sum() * 32).item())


def test_layer_transform_follows_a_hidden_cut():
    apt = make("llama")
    transform = LayerTransform(apt)
    random_binary_masks(apt, seed=2, empty_site=False)
    apt.prune()
    assert transform.sync()
    d = len(apt.state.hidden)
    assert transform.linear.weight.shape == (d, d) and transform.linear.lora_A.shape[1] == d
    x = torch.randn(3, d)
    assert torch.equal(transform(x), x)
    assert not transform.sync()


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_distill_loss_end_to_end(kind):
    apt = make(kind)
    apt.eval()
    transform = LayerTransform(apt)
    snapshot_teacher(apt)
    randomize_adapters(apt, seed=3, scale=0.2)  # the student has moved away from the teacher
    inputs = tiny_inputs(kind)
    with teacher_mode(apt):
        teacher = apt(**inputs, output_hidden_states=True)
    student = apt(**inputs, output_hidden_states=True)
    loss, parts = distill_loss(student, teacher, apt, transform, torch.Generator().manual_seed(0),
                               inputs["attention_mask"])
    assert loss.item() > 0 and parts["distill"] == pytest.approx(loss.item())
    ce = torch.tensor(2.0)
    total = mixed_loss(ce, loss, mu=0.25)
    assert total.item() == pytest.approx(0.25 * loss.item() + 0.75 * 2.0, rel=1e-5)
    total.backward()
    assert transform.linear.lora_B.grad is not None and transform.linear.lora_B.grad.abs().sum() > 0
    assert any(m.lora_A.grad is not None and m.lora_A.grad.abs().sum() > 0 for m in apt.adapters().values())
