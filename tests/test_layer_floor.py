"""A layer floor (``prune.layer_floor``): every layer keeps at least that fraction of its KV groups and FFN
neurons, the most salient ones, within the same budget, through a cut before tuning too; the config checks its
range."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_inputs, tiny_llama
from helpers import load_benchmark, tiny_llama_dir
from test_train_instruct import TINY

from aptune import APT, APTModel
from aptune.cli import main
from aptune.config import APTConfig, PruneConfig, load_config
from aptune.distill.self_distill import DistillConfig
from aptune.models import load_model
from aptune.search import layer_floor, search_keep_set
from aptune.train import train


def _scores_starving_one_layer(apt: APTModel) -> dict:
    """Random salience, except that layer 0's FFN neurons and groups are all far less salient than the rest."""
    g = torch.Generator().manual_seed(0)
    scores = {"heads": {n: torch.rand(len(m), generator=g) for n, m in apt.state.heads.items()},
              "ffn": {n: torch.rand(len(m), generator=g) for n, m in apt.state.ffn.items()},
              "hidden": torch.rand(len(apt.state.hidden), generator=g) + 10.0}
    first_heads, first_ffn = next(iter(scores["heads"])), next(iter(scores["ffn"]))
    scores["heads"][first_heads] *= 1e-6
    scores["ffn"][first_ffn] *= 1e-6
    return scores


def test_the_floor_keeps_the_most_salient_share_of_every_layer_within_the_budget():
    apt = APTModel(tiny_llama())
    scores = _scores_starving_one_layer(apt)
    budget = int(0.6 * apt.original_params)
    plain = search_keep_set(scores, apt.state, apt.counter, budget)
    first_ffn = next(iter(apt.state.ffn))
    assert plain.ffn[first_ffn].sum() < math.ceil(0.5 * len(apt.state.ffn[first_ffn]))  # the floor has work to do

    floored = search_keep_set(scores, apt.state, apt.counter, budget, protect=layer_floor(scores, apt.state, 0.5))
    assert floored.params <= budget
    for kind in ("heads", "ffn"):
        for name, mask in getattr(floored, kind).items():
            floor = math.ceil(0.5 * len(mask))
            assert mask.sum() >= floor, (kind, name)
            most_salient = torch.argsort(scores[kind][name], descending=True)[:floor]
            assert bool((mask[most_salient] == 1).all()), (kind, name)


def test_rounded_widths_never_fall_below_the_floor():
    """With ``round_to`` the floor of an FFN site is rounded up, so that rounding kept widths down keeps it."""
    apt = APTModel(tiny_llama())
    scores = _scores_starving_one_layer(apt)
    budget, first_ffn = int(0.6 * apt.original_params), next(iter(apt.state.ffn))
    floor = math.ceil(0.6 * len(apt.state.ffn[first_ffn]))  # 29 of 48: not a multiple of 8
    unrounded_floor = search_keep_set(scores, apt.state, apt.counter, budget, round_to=8,
                                      protect=layer_floor(scores, apt.state, 0.6))
    assert unrounded_floor.ffn[first_ffn].sum() < floor  # the case the rounded floor is for

    keep = search_keep_set(scores, apt.state, apt.counter, budget, round_to=8,
                           protect=layer_floor(scores, apt.state, 0.6, round_to=8))
    assert keep.params <= budget
    for name, mask in keep.ffn.items():
        assert int(mask.sum()) % 8 == 0 and mask.sum() >= floor, name
    assert int(keep.ffn[first_ffn].sum()) == 32
    most_salient = torch.argsort(scores["ffn"][first_ffn], descending=True)[:32]
    assert bool((keep.ffn[first_ffn][most_salient] == 1).all())


def test_a_floor_of_zero_protects_nothing():
    apt = APTModel(tiny_llama())
    assert layer_floor(_scores_starving_one_layer(apt), apt.state, 0.0) == {}


def test_a_cut_before_tuning_respects_the_floor_and_the_config_checks_its_range():
    torch.manual_seed(0)
    model = APTModel(tiny_llama())
    config = APTConfig(prune=PruneConfig(density=0.6, before_tuning=True, calibration_batches=2, start_step=1,
                                         num_steps=1, end_fraction=0.5, layer_floor=0.5),
                       distill=DistillConfig(enabled=False))
    apt = APT(model, config, total_steps=8)
    batches = []
    for seed in (1, 2):
        batch = tiny_inputs("llama", batch=2, length=7, seed=seed)
        batches.append({**batch, "labels": batch["input_ids"].clone()})
    apt.prune_before_tuning(batches)
    assert apt.density() <= 0.6
    kept, original = model.state.kept_sizes(), model.state.original_sizes
    for kind in ("heads", "ffn"):
        for name, size in kept[kind].items():
            assert size >= math.ceil(0.5 * original[kind][name]), (kind, name)
    with pytest.raises(ValueError, match=r"prune.layer_floor must lie in \[0, 1\); got 1.0"):
        load_config(None, ["prune.layer_floor=1.0"])


def test_the_cut_loss_benchmark_matches_a_real_cut_before_tuning(tmp_path):
    """benchmarks/cut_loss.py applies keep sets as masks to one model; its row at the config's floor (0.6, the
    default of alpaca.yaml) is the held-out loss of the model ``aptune train`` cuts from the same calibration batches
    (train.steps=0: evaluated right after the cut). alpaca.yaml rounds kept widths to multiples of 8, so the floor
    of ceil(0.6 x 48) = 29 neurons becomes 32."""
    base, _ = tiny_llama_dir(tmp_path)
    overrides = [f"model.name={base}", *TINY, "prune.before_tuning=true", "prune.calibration_batches=3"]
    cut_loss = load_benchmark("cut_loss")
    out = tmp_path / "cut_loss.json"
    cut_loss.main(["--config", "configs/smollm2/alpaca.yaml", *overrides, "--floors", "0", "0.6", "--calibration",
                   "3", "--threads", "1", "--json", str(out)])
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    floored = rows["calibration 3, floor 0.6"]
    assert floored["ffn_min"] >= 32 and floored["ffn_min"] % 8 == 0 and floored["layers_without_heads"] == 0
    assert rows["calibration 3, floor 0.0"]["eval_loss"] != floored["eval_loss"]  # the floor changes the cut

    summary = train(load_config("configs/smollm2/alpaca.yaml", [*overrides, f"output_dir={tmp_path / 'run'}",
                                                               "train.steps=0"]))
    assert floored["eval_loss"] == pytest.approx(summary["final"]["eval_loss"], abs=1e-5)


def _kv_groups(attention) -> int:
    """KV groups (of 8 dims) an exported layer kept; a layer whose attention was cut entirely has no k_proj."""
    return attention.k_proj.weight.shape[0] // 8 if hasattr(attention, "k_proj") else 0


def _prune_command(tmp_path, density: str) -> list[str]:
    """``aptune prune`` of a saved tiny LLaMA (2 KV groups and 48 FFN neurons a layer) at ``density``."""
    model_dir = tmp_path / "tiny"
    torch.manual_seed(0)
    tiny_llama().save_pretrained(model_dir)
    return ["prune", "--model", str(model_dir), "--head", "causal-lm", "--density", density, "--round-to", "1"]


def _exported_widths(command: list[str], out) -> list[tuple[int, int]]:
    """(FFN width, KV groups) of every layer of the export ``command`` writes to ``out``."""
    assert main([*command, "--output", str(out)]) == 0
    layers = load_model(out, head="causal-lm").model.layers
    return [(layer.mlp.down_proj.weight.shape[1], _kv_groups(layer.self_attn)) for layer in layers]


def test_aptune_prune_takes_a_layer_floor_and_refuses_one_out_of_range(tmp_path, capsys):
    args = _prune_command(tmp_path, "0.3")
    assert main([*args, "--layer-floor", "1.0", "--output", str(tmp_path / "refused")]) == 2
    assert "--layer-floor must lie in [0, 1) (a fraction of each layer's blocks); got 1.0" in capsys.readouterr().err

    floor_ffn = math.ceil(0.6 * 48)  # and ceil(0.6 x 2) = both KV groups
    unfloored = _exported_widths([*args, "--layer-floor", "0"], tmp_path / "floor-0")
    assert any(ffn < floor_ffn or groups < 2 for ffn, groups in unfloored)  # without a floor some layer is thinner
    floored = _exported_widths([*args, "--layer-floor", "0.6"], tmp_path / "floor-0.6")
    assert all(ffn >= floor_ffn and groups == 2 for ffn, groups in floored)
