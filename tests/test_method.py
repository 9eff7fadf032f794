"""The APT object in a plain loop on a tiny random BERT: the distillation teacher, μ and the method's state."""

from __future__ import annotations

import torch
from conftest import tiny_bert

from aptune import APT, APTConfig, APTModel, DistillConfig, PruneConfig
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


def test_the_teacher_keeps_the_blocks_in_the_tensors_until_the_last_pruning_step():
    seen = []
    apt, events = _train(DistillConfig(enabled=True),
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


def test_without_distillation_blocks_leave_at_every_pruning_step_and_mu_stays_zero():
    seen = []
    apt, _ = _train(DistillConfig(), probe=lambda a, s: seen.append((a.step, a.model.num_params(), a.mu())))
    cut_early = [held for step, held, _ in seen if apt.schedule.steps[0] < step < apt.schedule.steps[-1]]
    assert min(cut_early) < apt.model.original_params
    assert all(mu == 0.0 for *_, mu in seen) and not apt.teacher_ready and apt.transform is None


def test_the_default_leaves_distillation_off_and_paper_turns_it_on():
    assert not APTConfig().distill.enabled
    assert APTConfig.paper().distill.enabled
    assert APTConfig.paper().prune == APTConfig().prune and APTConfig.paper().rank == APTConfig().rank


def test_mu_rises_to_one_over_the_pruning_window_and_ends_with_it():
    seen = []
    apt, _ = _train(DistillConfig(enabled=True), probe=lambda a, s: seen.append((a.step, a.mu())))
    first, last = apt.schedule.steps[0], apt.schedule.steps[-1]
    mus = dict(seen)  # steps done -> μ of the next step
    assert all(mus[step] == 0.0 for step in range(1, first)) and all(mus[s] == 0.0 for s in range(last, STEPS + 1))
    inside = [mus[step] for step in range(first, last)]
    assert inside == sorted(inside) and 0.0 < max(inside) <= 1.0


def test_the_state_dict_round_trips_through_the_checkpoint_split():
    apt, _ = _train(DistillConfig(enabled=True), until=14)
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
