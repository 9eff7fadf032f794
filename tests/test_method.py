"""The APT object in a plain loop on a tiny random BERT: the distillation teacher options and its state."""

from __future__ import annotations

import torch
from conftest import tiny_bert

from aptune import APT, APTConfig, APTModel, DistillConfig, PruneConfig
from aptune.adapters.layer import APTLinear
from aptune.distill import teacher_mode
from aptune.train.checkpoint import join_state, split_state

STEPS = 24
PRUNE = PruneConfig(density=0.5, start_step=4, num_steps=3, end_fraction=0.75, warmup_fraction=0, mask_lr=0.5)


def _batch(step):
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(3, 100, (4, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 3, (4,), generator=g)}


def _train(distill: DistillConfig, until: int = STEPS, probe=None):
    model = APTModel(tiny_bert(), seed=0)
    apt = APT(model, APTConfig(prune=PRUNE, distill=distill), total_steps=STEPS, seed=0)
    optimizer = torch.optim.AdamW(apt.trainable_parameters(), lr=1e-3)
    events = []
    for step in range(until):
        apt.compute_loss(_batch(step)).loss.backward()
        apt.after_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        event = apt.after_optimizer_step(optimizer)
        events += [event] if event else []
        if probe:
            probe(apt, step)
    return apt, events


def test_the_default_dense_teacher_keeps_the_blocks_in_the_tensors_until_the_last_pruning_step():
    seen = []
    apt, events = _train(DistillConfig(),
                         probe=lambda a, s: seen.append((a.step, a.model.num_params(), a.model.num_kept_params())))
    model, last = apt.model, apt.schedule.steps[-1]
    before = [(held, kept) for step, held, kept in seen if step < last]
    assert all(held == model.original_params for held, _ in before)  # nothing cut while distilling...
    assert min(kept for _, kept in before) < model.original_params  # ...although masks removed blocks
    assert model.num_params() == model.num_kept_params() <= 0.5 * model.original_params  # cut at the end
    removed = {kind: sum(e.removed[kind] for e in events) for kind in ("heads", "ffn", "hidden")}
    sizes, original = model.state.sizes(), model.state.original_sizes
    assert removed == {"heads": sum(original["heads"].values()) - sum(sizes["heads"].values()),
                       "ffn": sum(original["ffn"].values()) - sum(sizes["ffn"].values()),
                       "hidden": original["hidden"] - sizes["hidden"]}


def test_a_teacher_on_the_cut_backbone_lets_blocks_leave_at_every_pruning_step():
    seen = []
    apt, _ = _train(DistillConfig.paper(), probe=lambda a, s: seen.append((a.step, a.model.num_params(),
                                                                       a.model.num_kept_params())))
    cut_early = [held for step, held, kept in seen if apt.schedule.steps[0] < step < apt.schedule.steps[-1]]
    assert min(cut_early) < apt.model.original_params


def test_a_live_teacher_is_the_unpruned_model_with_the_students_current_adapters():
    def probe(apt, step):
        if step != apt.schedule.steps[1]:  # masks are binary zeros and nothing is cut yet
            return
        batch = {k: v for k, v in _batch(99).items() if k != "labels"}
        assert not any(m.teacher_A is not None for m in apt.model.modules() if isinstance(m, APTLinear))
        with teacher_mode(apt.model, masks=False):
            teacher = apt.model(**batch).logits
        saved = (apt.model.state.heads, apt.model.state.ffn, apt.model.state.hidden)
        state = apt.model.state
        state.heads = {n: torch.ones_like(m) for n, m in state.heads.items()}
        state.ffn = {n: torch.ones_like(m) for n, m in state.ffn.items()}
        state.hidden = torch.ones_like(state.hidden)
        apt.model.eval()
        with torch.no_grad():
            dense = apt.model(**batch).logits
        apt.model.train()
        state.heads, state.ffn, state.hidden = saved
        assert torch.equal(teacher, dense)
        probe.checked = True

    probe.checked = False
    apt, _ = _train(DistillConfig(dense_teacher=True, teacher_masks=False, teacher="live"), probe=probe)
    assert probe.checked and apt.teacher_ready


def test_max_mu_caps_the_distillation_weight():
    mus = []
    _train(DistillConfig(max_mu=0.3), probe=lambda a, s: mus.append(a.mu()))
    assert max(mus) == 0.3 and min(mus) == 0.0


def test_distilling_through_recovery_keeps_the_dense_teacher_and_cuts_when_distillation_ends():
    seen = []
    apt, events = _train(DistillConfig(end_fraction=0.9),
                         probe=lambda a, s: seen.append((a.step, a.mu(), a.model.num_params())))
    last, end = apt.schedule.steps[-1], int(0.9 * STEPS)
    assert apt.distill_end == end > last
    mus = {step: mu for step, mu, _ in seen}
    assert all(mus[step] == 1.0 for step in range(last, end)) and all(mus[s] == 0.0 for s in range(end, STEPS))
    held = {step: n for step, _, n in seen}
    assert held[end - 1] == apt.model.original_params  # the teacher still runs on every block...
    assert held[end] == apt.model.num_kept_params() <= 0.5 * apt.model.original_params  # ...cut at the end
    assert events[-1].distillation_ended and events[-1].step == end and not events[-2].distillation_ended


def test_distilling_through_recovery_ends_where_the_default_window_ends_if_asked_to():
    default, _ = _train(DistillConfig(), until=STEPS)
    window, _ = _train(DistillConfig(end_fraction=PRUNE.end_fraction), until=STEPS)
    assert window.distill_end == default.distill_end == default.schedule.steps[-1]
    assert all(torch.equal(a, b) for a, b in zip(default.model.state_dict().values(), window.model.state_dict().values()))


def test_a_distillation_window_that_ends_inside_the_pruning_window_is_refused():
    import pytest

    with pytest.raises(ValueError, match=r"distill.end_fraction=0.5 .*prune.end_fraction=0.75"):
        APT(APTModel(tiny_bert(), seed=0), APTConfig(prune=PRUNE, distill=DistillConfig(end_fraction=0.5)),
            total_steps=STEPS)


def test_the_state_dict_round_trips_through_the_checkpoint_split():
    apt, _ = _train(DistillConfig(), until=14)
    state = apt.state_dict()
    tensors, plain = split_state(state)
    back = join_state(tensors, plain)
    assert back.keys() == state.keys() and back["kept_before"] == state["kept_before"]
    for section in ("scorer", "importance", "transform"):
        assert back[section].keys() == state[section].keys()
        assert all(torch.equal(torch.as_tensor(back[section][k]), torch.as_tensor(state[section][k]))
                   for k in state[section])
    twin = APT(apt.model, apt.config, total_steps=STEPS, seed=1)  # another seed: everything must come from state
    twin.load_state_dict(back)
    assert twin.step == apt.step == 14 and twin.teacher_ready and twin.best == apt.best
    assert torch.equal(twin.generator.get_state(), apt.generator.get_state())
    assert all(torch.equal(a, b) for a, b in zip(twin.scorer.scores()["ffn"].values(),
                                                  apt.scorer.scores()["ffn"].values()))
