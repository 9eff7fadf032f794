"""AdamW moments follow physical cuts and rank growth; the LR schedule keeps running."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TINY, random_binary_masks, randomize_adapters, tiny_inputs
from torch import nn

from aptune.model import AdapterConfig, APTModel
from aptune.tuning import OptimizerSurgery, carry_over_cut, carry_over_growth, grow_ranks, tuning_params


def trained(kind="llama", steps=2, adapter=None):
    """A tiny model, an AdamW over its trainable parameters with a LambdaLR, after a few steps."""
    apt = APTModel(TINY[kind](), adapter=adapter, seed=0)
    randomize_adapters(apt)
    params = [p for p in apt.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for seed in range(steps):
        train_step(apt, optimizer, scheduler, seed)
    return apt, optimizer, scheduler


def train_step(apt, optimizer, scheduler, seed=0):
    optimizer.zero_grad()
    apt(**tiny_inputs(apt.family.name, seed=seed)).logits.pow(2).mean().backward()
    optimizer.step()
    scheduler.step()


def optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def positions(old_index, new_index):
    return torch.nonzero(torch.isin(old_index, new_index)).flatten()


def test_moments_survive_a_cut_at_the_right_indices():
    apt, optimizer, scheduler = trained()
    site = apt.family.attention_sites[0]
    q = apt.model.get_submodule(site.q)
    old_A, old_B = q.lora_A, q.lora_B
    state_A = {k: v.clone() for k, v in optimizer.state[old_A].items()}
    state_B = {k: v.clone() for k, v in optimizer.state[old_B].items()}
    heads_before = apt.state.head_index[site.name].clone()
    hidden_before = apt.state.hidden_index.clone()
    random_binary_masks(apt, seed=1)  # heads, neurons, hidden dims; the last attention/FFN site emptied
    apt.state.set_masks(heads={site.name: torch.tensor([0.0, 1.0])})  # site 0 loses its first KV group
    with OptimizerSurgery(optimizer, apt) as surgery:
        apt.prune()
    hidden_keep = positions(hidden_before, apt.state.hidden_index)
    group_keep = positions(heads_before, apt.state.head_index[site.name])
    width = site.group_size * site.head_dim
    channels = (group_keep[:, None] * width + torch.arange(width)).flatten()
    assert len(hidden_keep) < len(hidden_before) and len(channels) < old_B.shape[0]
    assert q.lora_A is not old_A and q.lora_B is not old_B
    new_A, new_B = optimizer.state[q.lora_A], optimizer.state[q.lora_B]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(new_A[key], state_A[key].index_select(1, hidden_keep))
        assert torch.equal(new_B[key], state_B[key].index_select(0, channels))
    assert torch.equal(new_A["step"], state_A["step"])
    # the optimizer holds exactly the model's trainable parameters: replaced ones in, vanished ones out
    held = optimizer_params(optimizer)
    trainable = [p for p in apt.parameters() if p.requires_grad]
    assert {id(p) for p in held} == {id(p) for p in trainable}
    assert old_A not in optimizer.state and len(surgery.changed) > 0
    # training and the schedule go on with the same optimizer object
    lr = optimizer.param_groups[0]["lr"]
    train_step(apt, optimizer, scheduler, seed=5)
    assert optimizer.param_groups[0]["lr"] < lr
    assert int(optimizer.state[q.lora_A]["step"]) == int(state_A["step"]) + 1


def test_moments_survive_growth_with_zeros_for_new_slots():
    apt, optimizer, scheduler = trained()
    old = {path: (m.lora_A, m.lora_B) for path, m in apt.adapters().items()}
    saved = {path: ({k: v.clone() for k, v in optimizer.state[a].items()},
                    {k: v.clone() for k, v in optimizer.state[b].items()}) for path, (a, b) in old.items()}
    ranks_before = apt.ranks()
    importance = {path: float(i) for i, path in enumerate(apt.adapters())}
    with OptimizerSurgery(optimizer, apt):
        ranks = grow_ranks(apt, importance, 2 * tuning_params(apt))
    grown = [p for p in ranks if ranks[p] > ranks_before[p]]
    assert grown
    for path, module in apt.adapters().items():
        state_A, state_B = optimizer.state[module.lora_A], optimizer.state[module.lora_B]
        r = ranks_before[path]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state_A[key][:r], saved[path][0][key])
            assert torch.equal(state_B[key][:, :r], saved[path][1][key])
            assert not state_A[key][r:].any() and not state_B[key][:, r:].any()
            assert state_A[key].shape == module.lora_A.shape
    train_step(apt, optimizer, scheduler, seed=3)  # shapes are consistent for AdamW


def test_cut_then_growth_in_one_context_compose():
    apt, optimizer, scheduler = trained()
    path, module = next(iter(apt.adapters().items()))
    old_A = module.lora_A
    saved = optimizer.state[old_A]["exp_avg"].clone()
    hidden_before = apt.state.hidden_index.clone()
    random_binary_masks(apt, seed=4, empty_site=False)
    with OptimizerSurgery(optimizer, apt):
        apt.prune()
        module.grow_rank(module.rank + 3)
    keep = positions(hidden_before, apt.state.hidden_index)
    new = optimizer.state[module.lora_A]["exp_avg"]
    assert torch.equal(new[: saved.shape[0]], saved.index_select(1, keep))
    assert not new[saved.shape[0]:].any() and new.shape == module.lora_A.shape


def test_reset_mode_drops_moments_but_keeps_the_schedule():
    apt, optimizer, scheduler = trained()
    random_binary_masks(apt, seed=1)
    with OptimizerSurgery(optimizer, apt, mode="reset"):
        apt.prune()
    assert len(optimizer.state) == 0
    lr = optimizer.param_groups[0]["lr"]
    train_step(apt, optimizer, scheduler, seed=2)
    assert optimizer.param_groups[0]["lr"] < lr and len(optimizer.state) > 0
    with pytest.raises(ValueError, match="mode"):
        OptimizerSurgery(optimizer, apt, mode="keep")


def test_full_finetuning_hidden_cut_slices_norm_and_embedding_moments():
    apt, optimizer, scheduler = trained(adapter=AdapterConfig(rank=0, train_base=True))
    norm_path = apt.family.hidden.norms[0]
    norm = apt.model.get_submodule(norm_path)
    embedding = apt.model.get_submodule(apt.family.hidden.embeddings[0])
    saved_norm = optimizer.state[norm.weight]["exp_avg"].clone()
    saved_emb = optimizer.state[embedding.weight]["exp_avg"].clone()
    hidden_before = apt.state.hidden_index.clone()
    random_binary_masks(apt, seed=2, empty_site=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every replacement must be mapped, none restarted
        with OptimizerSurgery(optimizer, apt):
            apt.prune()
    keep = positions(hidden_before, apt.state.hidden_index)
    assert torch.equal(optimizer.state[norm.weight]["exp_avg"], saved_norm[keep])
    assert torch.equal(optimizer.state[embedding.weight]["exp_avg"], saved_emb.index_select(1, keep))
    train_step(apt, optimizer, scheduler, seed=4)


def test_functional_carry_over():
    old = nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([old], lr=0.1)
    old.grad = torch.randn(4, 3)
    optimizer.step()
    moments = optimizer.state[old]["exp_avg"].clone()
    keep = torch.tensor([0, 2])
    cut = nn.Parameter(old.data[:, keep].clone())
    carry_over_cut(optimizer, old, cut, 1, keep)
    assert optimizer.param_groups[0]["params"] == [cut]
    assert torch.equal(optimizer.state[cut]["exp_avg"], moments[:, keep])
    grown = nn.Parameter(torch.cat([cut.data, torch.zeros(2, 2)]))
    carry_over_growth(optimizer, cut, grown, 0)
    assert torch.equal(optimizer.state[grown]["exp_avg"][:4], moments[:, keep])
    assert not optimizer.state[grown]["exp_avg"][4:].any()
