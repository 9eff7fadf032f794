"""The least-squares refit of a cut's writers (``prune.refit``, aptune.structures.refit): it lowers every thinned
writer's output error, what it reports is what the new weights do, and the refitted cut is still the same model
masked, pruned and merged."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_inputs, tiny_llama
from helpers import tiny_llama_dir

from aptune import APT, APTModel
from aptune.config import APTConfig, PruneConfig, load_config
from aptune.distill.self_distill import DistillConfig
from aptune.model import AdapterConfig
from aptune.train import train

ALL_LINEARS = ["q", "k", "v", "o", "gate", "up", "down"]


def _apt(refit: bool = True) -> APT:
    torch.manual_seed(0)
    model = APTModel(tiny_llama(), AdapterConfig(ALL_LINEARS, rank=4), seed=0)
    config = APTConfig(prune=PruneConfig(density=0.6, before_tuning=True, calibration_batches=3, start_step=1,
                                         num_steps=1, end_fraction=0.5, refit=refit),
                       distill=DistillConfig(enabled=False))
    return APT(model, config, total_steps=8)


def _batches(seeds=(1, 2, 3, 4, 5, 6)) -> list[dict[str, torch.Tensor]]:
    batches = []
    for seed in seeds:
        batch = tiny_inputs("llama", batch=4, length=12, seed=seed)
        batches.append({**batch, "labels": batch["input_ids"].clone()})
    return batches


def _cut(apt: APT) -> None:
    """Calibrate and set the keep set as binary masks, as ``prune_before_tuning`` does before its refit."""
    for _ in apt.calibrate(_batches()[:3], 3):
        pass
    keep = apt._keep_set(apt.config.prune.density)
    apt.model.state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)


def _dense_inputs(apt: APT, paths: list[str], batches) -> dict[str, torch.Tensor]:
    """Each writer's input over ``batches`` in the model as it is (padding positions dropped)."""
    seen: dict[str, list] = {p: [] for p in paths}
    handles = []
    for path in paths:
        def hook(module, args, path=path):
            seen[path].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        handles.append(apt.model.model.get_submodule(path).register_forward_pre_hook(hook))
    apt.model.eval()
    with torch.no_grad():
        for batch in batches:
            keep = batch["attention_mask"].bool().flatten()
            before = {p: len(v) for p, v in seen.items()}
            apt.model(**batch)
            for p in paths:
                seen[p][before[p]] = seen[p][before[p]][keep]
    for handle in handles:
        handle.remove()
    return {p: torch.cat(v) for p, v in seen.items()}


def test_the_refit_lowers_every_thinned_writers_error_and_reports_what_the_new_weights_do():
    apt, dense = _apt(), _apt(refit=False)
    _cut(apt)
    state = apt.model.state
    errors = apt.refit(_batches()[3:])
    assert errors, "the cut thinned no o or down projection: the test's density cuts nothing"
    assert all(e["after"] < e["before"] for e in errors.values()), errors
    # recomputed from the unpruned model's inputs, the old and the new weights: the same numbers
    inputs = _dense_inputs(dense, list(errors), _batches()[3:])
    for site in apt.model.family.ffn_sites + apt.model.family.attention_sites:
        path = getattr(site, "down", None) or site.o
        if path not in errors:
            continue
        old = dense.model.model.get_submodule(path).weight
        new = apt.model.model.get_submodule(path).weight
        x = inputs[path]
        if hasattr(site, "down"):
            kept = torch.nonzero(state.ffn[site.name] > 0).flatten()
        else:
            width = site.group_size * site.head_dim
            groups = torch.nonzero(state.heads[site.name] > 0).flatten()
            kept = (groups[:, None] * width + torch.arange(width)[None, :]).flatten()
        target = x @ old.T
        for weight, key in ((old, "before"), (new, "after")):
            error = (x[:, kept] @ weight[:, kept].T - target).norm() / target.norm()
            assert float(error) == pytest.approx(errors[path][key], rel=1e-3), (path, key)


def test_a_refitted_cut_is_the_same_model_masked_pruned_and_merged():
    apt = _apt()
    _cut(apt)
    apt.refit(_batches()[3:])
    batch = tiny_inputs("llama", batch=2, length=9, seed=11)
    apt.model.eval()
    with torch.no_grad():
        masked = apt.model(**batch).logits
        apt.model.prune()
        pruned = apt.model(**batch).logits
        merged = apt.model.merged_model()(**batch).logits
    torch.testing.assert_close(pruned, masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, masked, rtol=1e-5, atol=1e-5)


def test_the_refit_changes_only_the_kept_columns_of_thinned_writers():
    apt = _apt()
    family = apt.model.family
    before = {name: p.detach().clone() for name, p in apt.model.named_parameters()}
    _cut(apt)
    apt.refit(_batches()[3:])
    state = apt.model.state
    changed = {name for name, p in apt.model.named_parameters() if not torch.equal(p, before[name])}
    thinned = {f"model.{s.down}.weight" for s in family.ffn_sites if (state.ffn[s.name] == 0).any()}
    thinned |= {f"model.{s.o}.weight" for s in family.attention_sites
                if 0 < (state.heads[s.name] > 0).sum() < len(state.heads[s.name])}
    assert changed and changed <= thinned, (changed, thinned)
    for site in family.ffn_sites:  # the columns of dropped neurons are left as they were (they are cut away)
        dropped = torch.nonzero(state.ffn[site.name] == 0).flatten()
        name = f"model.{site.down}.weight"
        assert torch.equal(dict(apt.model.named_parameters())[name][:, dropped], before[name][:, dropped])


def test_prune_before_tuning_refits_toward_the_dense_model_on_the_batches_after_the_calibration_ones():
    dense, with_refit, without = _apt(), _apt(refit=True), _apt(refit=False)
    batches = _batches()
    with_refit.prune_before_tuning(iter(batches))
    without.prune_before_tuning(iter(batches))
    assert with_refit.refit_errors and not without.refit_errors
    assert with_refit.model.state.kept_sizes() == without.model.state.kept_sizes()  # the same keep set
    distance = {}
    for name, apt in (("refit", with_refit), ("plain", without)):
        apt.model.eval()
        dense.model.eval()
        with torch.no_grad():
            distance[name] = sum(float((apt.model(**b).logits - dense.model(**b).logits).pow(2).mean())
                                 for b in batches[3:])
    assert distance["refit"] < distance["plain"], distance  # closer to what the unpruned model computes


def test_refit_needs_a_cut_before_tuning():
    with pytest.raises(ValueError, match="prune.refit=true .* prune.before_tuning=true"):
        load_config("configs/smollm2/alpaca.yaml", ["prune.refit=true", "prune.before_tuning=false"])


def test_a_run_with_refit_logs_the_errors_of_the_writers_it_refitted(tmp_path):
    base, _ = tiny_llama_dir(tmp_path)
    run = tmp_path / "run"
    train(load_config("configs/smollm2/alpaca.yaml", [
        f"output_dir={run}", f"model.name={base}", "data.max_length=64", "data.max_train_samples=64",
        "data.max_eval_samples=16", "train.steps=4", "train.eval_every=4", "prune.start_step=1",
        "prune.num_steps=1", "prune.calibration_batches=2", "prune.refit=true"]))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    cut = next(e for e in events if e.get("event") == "prune_before_tuning")
    assert cut["refit"] and all(e["after"] < e["before"] for e in cut["refit"].values())
