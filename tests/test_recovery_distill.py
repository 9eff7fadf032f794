"""Distillation from the unpruned model after a cut before tuning (``recover.teacher=dense``, docs/method.md §F2):
the teacher is the model as received and stays so through the cut and tuning, the loss is w·KL + (1−w)·CE on the
positions that have a label (checked by hand), the config refuses what it cannot do, and a tiny run uses it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_inputs, tiny_llama
from helpers import tiny_llama_dir
from test_train_instruct import EXACT, TINY

from aptune import APT, APTModel
from aptune.config import APTConfig, PruneConfig, load_config
from aptune.distill.recovery import RecoveryConfig, label_positions
from aptune.distill.self_distill import DistillConfig
from aptune.train import train


def _method(weight=0.5, temperature=1.0):
    torch.manual_seed(0)
    model = APTModel(tiny_llama())
    config = APTConfig(prune=PruneConfig(density=0.7, before_tuning=True, calibration_batches=2, start_step=1,
                                         num_steps=1, end_fraction=0.5),
                       distill=DistillConfig(enabled=False),
                       recover=RecoveryConfig(teacher="dense", weight=weight, temperature=temperature))
    return model, APT(model, config, total_steps=8)


def _batch(seed=0):
    batch = tiny_inputs("llama", batch=2, length=7, seed=seed)
    labels = batch["input_ids"].clone()
    labels[:, :3] = -100  # a prompt without loss, as in instruction data
    return {**batch, "labels": labels}


def test_label_positions_shift_for_a_causal_lm():
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, 8, -100]])
    assert label_positions(labels, causal=True).tolist() == [[False, True, True, False], [True, True, False, False]]
    assert label_positions(labels, causal=False).tolist() == [[False, False, True, True], [False, True, True, False]]
    assert label_positions(torch.tensor([0, 1]), causal=False) is None  # class ids: every row


def test_teacher_is_the_model_before_the_cut_and_stays_so():
    model, apt = _method()
    batch = _batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).logits
    apt.prune_before_tuning([_batch(1), _batch(2)])
    assert apt.density() < 0.75
    optimizer = torch.optim.AdamW(apt.trainable_parameters(), lr=1e-2)
    for step in range(3):
        apt.compute_loss(_batch(step)).loss.backward()
        apt.after_backward()
        optimizer.step()
        optimizer.zero_grad()
        apt.after_optimizer_step(optimizer)
    with torch.no_grad():
        teacher = apt.recovery_teacher(**inputs).logits
        student = model(**inputs).logits
    torch.testing.assert_close(teacher, before, rtol=0, atol=1e-6)
    assert not torch.allclose(student, before, atol=1e-3)  # the student was cut and tuned; the teacher was not
    assert not any(p.requires_grad for p in apt.recovery_teacher.parameters())


@pytest.mark.parametrize("weight,temperature", [(0.5, 1.0), (0.8, 2.0)])
def test_loss_is_the_weighted_kl_on_label_positions_plus_cross_entropy(weight, temperature):
    model, apt = _method(weight, temperature)
    apt.prune_before_tuning([_batch(1), _batch(2)])
    with torch.no_grad():  # move the student well away from the teacher, so the KL is not a rounding error
        for adapter in model.adapters().values():
            adapter.lora_B.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    batch = _batch()
    out = apt.compute_loss(batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        z_t = apt.recovery_teacher(**inputs).logits
        z_s = model(**inputs).logits
        ce = model(**batch).loss
    kl_terms = []  # by hand: KL(teacher ‖ student) at every position whose next token has a label
    for b in range(2):
        for t in range(6):
            if batch["labels"][b, t + 1] != -100:
                p = F.softmax(z_t[b, t] / temperature, -1)
                kl_terms.append((p * (p.log() - F.log_softmax(z_s[b, t] / temperature, -1))).sum())
    kd = temperature**2 * torch.stack(kl_terms).mean()
    assert out.parts["kd"] == pytest.approx(float(kd), rel=1e-4)  # float32 sums in another order
    assert out.parts["ce"] == pytest.approx(float(ce), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(weight * float(kd) + (1 - weight) * float(ce), rel=1e-4)
    assert out.mu == weight


def test_config_refuses_recovery_without_a_cut_before_tuning_or_with_self_distillation():
    with pytest.raises(ValueError, match="prune.before_tuning=true"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=dense", "prune.before_tuning=false"])
    with pytest.raises(ValueError, match="set distill.enabled=false"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=dense", "distill.enabled=true"])
    with pytest.raises(ValueError, match="recover.teacher must"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=lora"])
    with pytest.raises(ValueError, match=r"recover.weight must lie in \[0, 1\]"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=dense", "recover.weight=1.5"])


def test_tiny_instruction_run_distils_from_the_dense_model(tmp_path):
    base, _ = tiny_llama_dir(tmp_path)
    run = tmp_path / "run"
    summary = train(load_config(EXACT, [
        f"output_dir={run}", f"model.name={base}", *TINY, "prune.before_tuning=true", "prune.calibration_batches=2",
        "recover.teacher=dense", "recover.weight=0.5"]))
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in steps if "loss" in e]
    assert steps and all(e["mu"] == 0.5 and e["kd"] >= 0 for e in steps)
    assert all(e["loss"] == pytest.approx(0.5 * e["kd"] + 0.5 * e["ce"], rel=1e-4) for e in steps)
    assert 0.6 < summary["density"] <= 0.7


def test_plan_counts_the_unpruned_teacher_as_the_method_builds_it():
    from aptune.bench.planner import PlanSettings, build_on_meta, describe, plan

    model, apt = _method()
    config = model.model.config
    meta = build_on_meta(config, "causal-lm")
    arch = describe(meta, "causal-lm")
    settings = dict(density=0.7, batch_size=2, seq_len=16, distill=False)
    without = plan(meta, arch, PlanSettings(**settings))
    with_teacher = plan(meta, arch, PlanSettings(**settings, recover_teacher=True))
    teacher_weights = sum(p.numel() * p.element_size() for p in apt.recovery_teacher.parameters())
    logits = 2 * 16 * (4 + 3 * 4) * config.vocab_size  # teacher logits + the KL's float32 log-probabilities
    for a, b in zip(without["phases"], with_teacher["phases"]):
        assert b.teacher - a.teacher == teacher_weights + logits
