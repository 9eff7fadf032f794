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
from aptune.distill.recovery import RecoveryConfig, label_positions, recovery_loss
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


def test_hidden_state_loss_is_the_relative_error_per_real_token_and_layer():
    """β·L_hidden (``recover.hidden_weight``): mean over layers and unpadded tokens of ‖h_s − h_t‖² / ‖h_t‖², by
    hand on a cut tiny model whose hidden size the cut thinned (the teacher's kept dimensions are compared)."""
    model, apt = _method()
    apt.config.recover.hidden_weight = 0.3
    searched = apt._keep_set

    def thinner_hidden(density):  # the tiny model's search keeps the whole hidden size; make the cut thin it
        keep = searched(density)
        keep.hidden[[1, 5, 6, 20]] = 0.0
        return keep

    apt._keep_set = thinner_hidden
    apt.prune_before_tuning([_batch(1), _batch(2)])
    assert model.state.sizes()["hidden"] == 28
    kept_dims = apt._kept_teacher_dims()
    assert kept_dims.tolist() == [i for i in range(32) if i not in (1, 5, 6, 20)]
    batch = _batch()
    batch["attention_mask"][1, -2:] = 0  # two padded tokens that must not count
    out = apt.compute_loss(batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        teacher = apt.recovery_teacher(**inputs, output_hidden_states=True).hidden_states
        student = model(**inputs, output_hidden_states=True).hidden_states
    terms = []
    for b in range(2):
        for t in range(7):
            if batch["attention_mask"][b, t]:
                kept = [h[b, t, kept_dims] for h in teacher[1:]]
                errors = [(s[b, t] - k).pow(2).sum() / k.pow(2).sum() for s, k in zip(student[1:], kept)]
                terms.append(torch.stack(errors).mean())
    hidden = torch.stack(terms).mean()
    assert out.parts["hidden"] == pytest.approx(float(hidden), rel=1e-4) and float(hidden) > 1e-3
    mixed = 0.5 * out.parts["kd"] + 0.5 * out.parts["ce"] + 0.3 * out.parts["hidden"]
    assert float(out.loss.detach()) == pytest.approx(mixed, rel=1e-4)
    restored = _method()[1]  # a resumed run restores the structure state and compares the same teacher dimensions
    restored.model.state.load_state_dict(model.state.state_dict())
    assert torch.equal(restored._kept_teacher_dims(), kept_dims)


def test_hidden_weight_zero_asks_for_no_hidden_states_and_negative_is_refused():
    model, apt = _method()
    apt.prune_before_tuning([_batch(1), _batch(2)])
    assert "hidden" not in apt.compute_loss(_batch()).parts
    with pytest.raises(ValueError, match="recover.hidden_weight must be >= 0"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=dense", "recover.hidden_weight=-1"])


# ------------------------------------------------------------------ a saved teacher (recover.teacher=model, §F6)
def _saved_teacher(tmp_path, vocab_size=100, nudge=0.0):
    """A tiny LLaMA saved as a folder: the student's own weights moved by ``nudge`` (a stand-in for the dense model
    after tuning), or a fresh model of another vocabulary size."""
    import transformers as tf

    torch.manual_seed(0)
    model = tiny_llama()
    if vocab_size != model.config.vocab_size:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**{**model.config.to_dict(), "vocab_size": vocab_size}))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(nudge * torch.randn_like(param))
    folder = tmp_path / f"teacher-{vocab_size}-{nudge}"
    model.save_pretrained(folder)
    return folder


def _model_teacher_method(folder):
    torch.manual_seed(0)
    model = APTModel(tiny_llama())
    config = APTConfig(prune=PruneConfig(density=0.7, before_tuning=True, calibration_batches=2, start_step=1,
                                         num_steps=1, end_fraction=0.5),
                       distill=DistillConfig(enabled=False),
                       recover=RecoveryConfig(teacher="model", teacher_model=str(folder)))
    return model, APT(model, config, total_steps=8)


def test_a_saved_teacher_is_the_model_in_its_folder_frozen_and_its_logits_are_the_target(tmp_path):
    folder = _saved_teacher(tmp_path, nudge=0.05)
    model, apt = _model_teacher_method(folder)
    apt.prune_before_tuning([_batch(1), _batch(2)])
    batch = _batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    import transformers as tf

    saved = tf.LlamaForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = saved(**inputs).logits
        student = model(**inputs).logits
    torch.testing.assert_close(apt.recovery_teacher(**inputs).logits, expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in apt.recovery_teacher.parameters())
    out = apt.compute_loss(batch)
    kd = recovery_loss(student, expected, batch["labels"], apt.config.recover, causal=True)
    assert out.parts["kd"] == pytest.approx(float(kd), rel=1e-5) and float(kd) > 1e-3


def test_a_saved_teacher_at_the_base_model_is_the_dense_teacher(tmp_path):
    """Before any tuning the dense teacher is the base model merged with zero adapters: a saved copy of the base
    must give the same loss to the bit, which pins recover.teacher=model to the distillation already measured."""
    saved_model, saved = _model_teacher_method(_saved_teacher(tmp_path))  # nudge 0: _method's base, saved
    dense_model, dense = _method()
    for apt in (saved, dense):
        apt.prune_before_tuning([_batch(1), _batch(2)])
    a, b = saved.compute_loss(_batch()), dense.compute_loss(_batch())
    assert float(a.loss.detach()) == float(b.loss.detach()) and a.parts == b.parts


def test_a_saved_teacher_of_another_vocabulary_or_missing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="predicts 120 tokens and the student 100"):
        _model_teacher_method(_saved_teacher(tmp_path, vocab_size=120))
    with pytest.raises(FileNotFoundError, match="recover.teacher_model=.*does not exist"):
        _model_teacher_method(tmp_path / "no" / "such" / "teacher")


def test_config_asks_for_the_teacher_folder_exactly_with_teacher_model():
    with pytest.raises(ValueError, match="recover.teacher=model and recover.teacher_model=<its folder>"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=model"])
    with pytest.raises(ValueError, match="otherwise leave recover.teacher_model unset"):
        load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=dense", "recover.teacher_model=runs/x/export"])
    config = load_config("configs/smollm2/alpaca.yaml", ["recover.teacher=model", "recover.teacher_model=runs/x/export"])
    assert config.recover.teacher_model == "runs/x/export"
