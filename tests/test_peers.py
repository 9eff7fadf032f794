"""A peer's method run by the peer's own code in APT's place: PEFT's AdaLoRA tunes the dense model, its rank
allocator decides the ranks, and the run folder is the one every aptune run writes, with an export that stock
``transformers`` reloads to the same outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from test_train_loop import TINY_RUN

from aptune.config import load_config
from aptune.peers import adalora, train_peer

PEER = ["peer.method=adalora", "prune.enabled=false", "adapter.rank=4", "rank.budget_ratio=2"]


BATCH = {"input_ids": torch.tensor([[101, 2023, 2003, 1037, 3231, 102]]),
         "attention_mask": torch.ones(1, 6, dtype=torch.long)}
SUMMARY_KEYS = ("final", "history", "params", "original_params", "total_params", "train_time_s", "peak_rss_bytes",
                "memory", "memory_breakdown", "export", "primary_metric", "best_after_pruning", "ranks", "peer",
                "density")


def _train_keeping_peft_model(config, monkeypatch) -> tuple[dict, dict]:
    """Train a peer; also return PEFT's own model (adapters unmerged) and its logits on ``BATCH`` before the export."""
    from aptune.peers import loop

    kept, save = {}, loop._save

    def logits_then_save(config, model, *args):
        model.eval()
        with torch.no_grad():
            kept["model"], kept["logits"] = model, model(**BATCH).logits
        return save(config, model, *args)

    monkeypatch.setattr(loop, "_save", logits_then_save)
    return train_peer(config), kept


def _stock_logits(folder, tmp_path) -> torch.Tensor:
    """``BATCH``'s logits from ``folder`` loaded in a fresh process by stock transformers, without remote code."""
    inputs = tmp_path / "batch.pt"
    torch.save(BATCH, inputs)
    code = ("import sys, torch, transformers; m = transformers.AutoModelForSequenceClassification.from_pretrained("
            "sys.argv[1]).eval(); b = torch.load(sys.argv[2]); print(m(**b).logits.tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(inputs)], capture_output=True, text=True,
                         check=True).stdout
    return torch.tensor(json.loads(out.strip().splitlines()[-1]))


def test_adalora_runs_by_peft_and_writes_a_run_folder_stock_transformers_reloads(tiny_base, tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, *PEER])
    summary, kept = _train_keeping_peft_model(config, monkeypatch)

    peft_config = kept["model"].peft_config["default"]
    assert (peft_config.init_r, peft_config.target_r) == (12, 8)  # 1.5 x and 2 x rank 4
    assert peft_config.tinit == 4 and peft_config.tfinal == 24 - 18  # APT's pruning window (4, 18]
    # AdaLoRA's allocator ran: the ranks it left are below the starting 12 and add up to its budget
    ranks = summary["ranks"]
    assert len(ranks) == 2 * 3 and max(ranks.values()) <= 12 and sum(ranks.values()) <= 8 * len(ranks)
    written = json.loads((run / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert written[key] is not None, key
    assert written["params"] == written["original_params"] and written["peer"]["method"] == "adalora"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "eval"] == [12, 24]
    # the export is a stock transformers folder: reloaded without aptune's code, the same logits as PEFT's model
    assert torch.allclose(_stock_logits(summary["export"], tmp_path), kept["logits"], atol=1e-5)


@pytest.mark.parametrize("method", ["torchpruning_magnitude", "torchpruning_taylor"])
def test_torch_pruning_cuts_to_apts_count_then_lora_recovers_into_a_stock_model(method, tiny_base, tmp_path,
                                                                                 monkeypatch):
    run = tmp_path / "run"
    config = load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, f"peer.method={method}",
                                "adapter.rank=4", "prune.calibration_batches=2"])
    summary, kept = _train_keeping_peft_model(config, monkeypatch)

    # Torch-Pruning's pruner ran: the exported sizes are below the tiny base's (hidden 32, 4 heads, FFN 64)
    exported = json.loads((run / "export" / "config.json").read_text())
    assert (exported["hidden_size"], exported["num_attention_heads"], exported["intermediate_size"]) == (24, 3, 36)
    assert "auto_map" not in exported
    # the budgeted parameters APT's density counts: 50% of the dense model's, within 1%
    target = 0.5 * summary["original_params"]
    assert summary["peer"]["cut"]["params"] == summary["params"] and abs(summary["params"] - target) <= 0.01 * target
    assert summary["density"] == summary["history"][-1]["density"] == summary["params"] / summary["original_params"]
    assert summary["peer"]["calibration_batches"] == (2 if method.endswith("taylor") else 0)
    assert summary["peer"]["torch_pruning"] == "1.6.1" and set(summary["ranks"].values()) == {4}
    written = json.loads((run / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert written[key] is not None, key
    assert torch.allclose(_stock_logits(summary["export"], tmp_path), kept["logits"], atol=1e-5)


def test_taylor_importance_keeps_other_channels_than_magnitude():
    """The calibration gradients decide: on the same model the two importances keep different hidden dimensions."""
    from conftest import tiny_bert, tiny_inputs

    from aptune.peers import torchpruning

    config = load_config(None, ["peer.method=torchpruning_taylor", "prune.density=0.5", "adapter.rank=4",
                                "prune.calibration_batches=2"])
    torch.manual_seed(0)
    dense = tiny_bert(num_labels=2)
    batch = {**tiny_inputs("bert"), "labels": torch.tensor([0, 1])}
    kept = {}
    for importance in ("magnitude", "taylor"):
        model = tiny_bert(num_labels=2)
        model.load_state_dict(dense.state_dict())
        peft_model, _ = torchpruning.wrap(model, config, iter([batch] * 2), importance)
        embedding = peft_model.base_model.model.bert.embeddings.word_embeddings.weight
        # each kept hidden dimension is a column of the dense embedding: find which
        kept[importance] = sorted(int((dense.bert.embeddings.word_embeddings.weight - column[:, None]).abs().sum(0)
                                      .argmin()) for column in embedding.T)
    assert len(kept["magnitude"]) == len(kept["taylor"]) == 24 and kept["magnitude"] != kept["taylor"]


def test_torch_pruning_cuts_only_the_ffn_of_a_grouped_query_decoder():
    from conftest import tiny_inputs, tiny_llama

    from aptune.families import family_for
    from aptune.peers import torchpruning
    from aptune.structures.params import ParamCounter

    config = load_config(None, ["model.head=causal-lm", "peer.method=torchpruning_magnitude", "prune.density=0.7",
                                "adapter.rank=4"])
    torch.manual_seed(0)
    model = tiny_llama()
    dense = ParamCounter(family_for(model)).count_model()
    peft_model, info = torchpruning.wrap(model, config, iter([]), "magnitude")
    layer = peft_model.base_model.model.model.layers[0]
    assert layer.mlp.up_proj.weight.shape[0] == layer.mlp.down_proj.weight.shape[1] == info["cut"]["ffn"] < 48
    assert layer.self_attn.k_proj.weight.shape == (16, 32)  # KV groups and hidden size as they were
    assert abs(info["cut"]["params"] - 0.7 * dense) <= 0.01 * 0.7 * dense
    assert peft_model(**tiny_inputs("llama")).logits.shape == (2, 7, 100)


def test_a_density_no_uniform_cut_can_meet_is_refused():
    from conftest import tiny_bert

    from aptune.families import family_for
    from aptune.peers.torchpruning import plan_cut
    from aptune.structures.params import ParamCounter

    with pytest.raises(ValueError, match=r"prune.density=0.001: no uniform cut .* choose a density between"):
        plan_cut(ParamCounter(family_for(tiny_bert())), 0.001, True)


def test_a_peer_refuses_what_belongs_to_apt():
    with pytest.raises(ValueError, match="prune.enabled=true contradicts"):
        load_config(None, ["peer.method=adalora"])
    with pytest.raises(ValueError, match="peer.method=torchpruning_taylor prunes to prune.density once, then tunes "
                                         "with the peer's adapters, which prune.enabled=false contradicts"):
        load_config(None, ["peer.method=torchpruning_taylor", "prune.enabled=false"])


def test_every_peer_row_runs_through_the_ablation_runner_and_reports_every_column(tiny_base, tmp_path, capsys):
    import yaml
    from test_ablation_runner import TINY

    from aptune.cli import main

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_base)}, "data": {"task": "sst2"}}))
    peers = {"torchpruning_magnitude": {"peer.method": "torchpruning_magnitude"},
             "torchpruning_taylor": {"peer.method": "torchpruning_taylor", "prune.calibration_batches": 2},
             "adalora": {"peer.method": "adalora", "prune.enabled": False}}
    plan = {"base": "tiny.yaml",
            "runs": {"apt": {"role": "method", "patch": {}},
                     **{name: {"role": "reference", "patch": {**patch, "adapter.rank": 4}}
                        for name, patch in peers.items()}},
            "profiles": {"tiny": {"tasks": ["sst2"], "seeds": [7], "overrides": TINY,
                                  "inference": {"batch_sizes": [2], "seq_len": 16, "warmup": 1, "repeats": 1,
                                                "threads": 1}}},
            "default_profile": "tiny"}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    runs = tmp_path / "runs"
    assert main(["ablate", str(tmp_path / "plan.yaml"), "--runs-dir", str(runs)]) == 0
    results = {p.stem.split("__")[0]: json.loads(p.read_text()) for p in (runs / "results").glob("*.json")}
    assert sorted(results) == ["adalora", "apt", "torchpruning_magnitude", "torchpruning_taylor"]
    for name, result in results.items():
        assert result["run_info"]["status"] == "ok", result["run_info"]["error"]
        train, inference = result["train_info"], result["inference_info"]
        for key in ("train_time_s", "peak_rss_bytes", "memory", "memory_breakdown", "curve", "params",
                    "original_params", "density", "exported"):
            assert train[key] is not None, (name, key)
        assert inference["side_by_side"]["2"]["median_s"] > 0 and result["eval_info"]["final"]["accuracy"] >= 0
        assert train["exported"]["needs_trust_remote_code"] == (name == "apt")  # aptune's export has its own code
        if name.startswith("torchpruning"):
            assert abs(train["params"] - 0.5 * train["original_params"]) <= 0.005 * train["original_params"]
            assert inference["params"] < results["adalora"]["inference_info"]["params"]
    assert main(["report", str(runs)]) == 0
    report = (runs / "report" / "report.md").read_text()
    assert "### What each run exported" in report and "| `apt` | aptune |" in report
    assert "| `torchpruning_taylor` | torchpruning_taylor: heads, hidden size and FFN neurons |" in report
    assert "; peers by their own code: peft " in report and ", torch-pruning 1.6.1." in report
