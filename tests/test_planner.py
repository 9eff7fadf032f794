"""`aptune plan` against the deterministic memory measure on the real models: the planned training step (dense,
and cut to the density with the adapters at the rank budget) and the planned forward pass are within 15% of what
``bench.memory`` counts for the same model, batch and dtype; a 7B plan comes from a config file alone."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from aptune.bench.planner import PlanSettings, check
from aptune.cli import main
from aptune.model import AdapterConfig, APTModel
from aptune.models import load_model

WITHIN = 0.15
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bases():
    """The two real models, loaded once in float32; every measurement wraps a copy."""
    return {"minilm": load_model("minilm", head="sequence-classification", num_labels=2),
            "smollm2": load_model("smollm2-135m", head="causal-lm")}


def checked(bases, name: str, head: str, dtype: str = "float32", **settings) -> list[dict]:
    def load() -> APTModel:
        adapters = AdapterConfig(list(settings.get("targets", [])))
        return APTModel(copy.deepcopy(bases[name]).to(getattr(torch, dtype)), adapters, seed=0)

    return check(load, head, PlanSettings(dtype=dtype, **settings))


@pytest.mark.parametrize("name,head,dtype,settings", [
    ("minilm", "sequence-classification", "float32", {"batch_size": 16, "seq_len": 64}),
    ("minilm", "sequence-classification", "float32", {"batch_size": 16, "seq_len": 64,
                                                      "gradient_checkpointing": True}),
    ("minilm", "sequence-classification", "bfloat16", {"batch_size": 16, "seq_len": 64}),
    ("smollm2", "causal-lm", "float32", {"batch_size": 2, "seq_len": 128}),
    ("smollm2", "causal-lm", "bfloat16", {"batch_size": 2, "seq_len": 128}),
    ("smollm2", "causal-lm", "float32", {"batch_size": 2, "seq_len": 128,  # configs/smollm2/alpaca.yaml's adapters
                                         "targets": ["q", "k", "v", "o", "gate", "up", "down"]}),
])
def test_plan_is_within_15_percent_of_the_measure(bases, name, head, dtype, settings):
    rows = checked(bases, name, head, dtype, density=0.5, **settings)
    assert len(rows) == 5
    for row in rows:
        assert abs(row["error"]) <= WITHIN, row


def test_plan_of_a_7b_config_reads_no_weights_and_fits_the_papers_24_gb(capsys, tmp_path):
    """LLaMA-2-7B from its config.json only: bf16 at density 0.7, batch 4 x 512 tokens, gradient checkpointing."""
    out = tmp_path / "plan.json"
    code = main(["plan", f"model.name={ROOT / 'configs' / 'models' / 'llama-2-7b.json'}", "model.head=causal-lm",
                 "prune.density=0.7", "train.batch_size=4", "data.max_length=512", "--dtype", "bfloat16",
                 "train.gradient_checkpointing=true", "--device", "cuda", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())[0]
    assert 6.5e9 < result["total_params_dense"] < 7.0e9  # LLaMA-2-7B: 6.74B parameters
    assert 0.69 < result["params_pruned"] / result["params_dense"] <= 0.7
    assert "Peak:" in capsys.readouterr().out
    peak = max(phase["total"] for phase in result["phases"])
    assert peak < 24e9, peak


def test_a_density_below_the_hidden_size_alone_is_refused(capsys):
    assert main(["plan", "prune.density=0.000001"]) == 2
    assert "plan a higher density" in capsys.readouterr().err


def test_plan_takes_adapter_targets_and_names_a_wrong_one(capsys, tmp_path):
    """Adapters on all seven linears of a LLaMA layer plan more adapter, optimizer and activation bytes than the
    family's default (q, v); an unknown target is refused with the ones to choose from."""
    config = ROOT / "configs" / "models" / "llama-2-7b.json"
    plans = {}
    run = [f"model.name={config}", "model.head=causal-lm", "prune.density=0.7", "train.batch_size=1",
           "data.max_length=64"]
    for name, targets in (("default", []), ("all", ["adapter.targets=q,k,v,o,gate,up,down"])):
        out = tmp_path / f"{name}.json"
        assert main(["plan", *run, "--dtype", "bfloat16", *targets, "--json", str(out)]) == 0
        plans[name] = {p["phase"]: p for p in json.loads(out.read_text())[0]["phases"]}
    for part in ("adapters", "optimizer", "activations"):
        assert plans["all"]["recovery"][part] > plans["default"]["recovery"][part], part
    assert plans["all"]["recovery"]["frozen_weights"] == plans["default"]["recovery"]["frozen_weights"]
    assert main(["plan", *run, "adapter.targets=q,ffn"]) == 2
    assert "adapter.targets must be a list of q, k, v, o, up, gate, down, head; got ['q', 'ffn']" in capsys.readouterr().err
