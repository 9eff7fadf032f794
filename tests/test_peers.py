"""A peer's method run by the peer's own code in APT's place: PEFT's AdaLoRA tunes the dense model, its rank
allocator decides the ranks, and the run folder is the one every aptune run writes, with an export that stock
``transformers`` reloads to the same outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from test_train_loop import TINY_RUN

from aptune.config import load_config
from aptune.peers import adalora, train_peer

PEER = ["peer.method=adalora", "prune.enabled=false", "adapter.rank=4", "rank.budget_ratio=2"]


def test_adalora_runs_by_peft_and_writes_a_run_folder_stock_transformers_reloads(tiny_base, tmp_path, monkeypatch):
    from aptune.peers import loop

    wrapped = {}
    wrap, save = adalora.wrap, loop._save
    batch = {"input_ids": torch.tensor([[101, 2023, 2003, 1037, 3231, 102]]),
             "attention_mask": torch.ones(1, 6, dtype=torch.long)}

    def keep(model, config):
        wrapped["model"] = wrap(model, config)
        return wrapped["model"]

    def logits_then_save(config, model, *args):
        model.eval()
        with torch.no_grad():  # PEFT's own model, adapters unmerged
            wrapped["logits"] = model(**batch).logits
        return save(config, model, *args)

    monkeypatch.setattr(adalora, "wrap", keep)
    monkeypatch.setattr(loop, "_save", logits_then_save)
    run = tmp_path / "run"
    config = load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, *PEER])
    summary = train_peer(config)

    peft_config = wrapped["model"].peft_config["default"]
    assert (peft_config.init_r, peft_config.target_r) == (12, 8)  # 1.5 x and 2 x rank 4
    assert peft_config.tinit == 4 and peft_config.tfinal == 24 - 18  # APT's pruning window (4, 18]
    # AdaLoRA's allocator ran: the ranks it left are below the starting 12 and add up to its budget
    ranks = summary["ranks"]
    assert len(ranks) == 2 * 3 and max(ranks.values()) <= 12 and sum(ranks.values()) <= 8 * len(ranks)
    written = json.loads((run / "summary.json").read_text())
    for key in ("final", "history", "params", "original_params", "train_time_s", "peak_rss_bytes", "memory", "export",
                "primary_metric", "best_after_pruning", "ranks", "peer"):
        assert written[key] is not None, key
    assert written["params"] == written["original_params"] and written["peer"]["method"] == "adalora"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "eval"] == [12, 24]

    # the export is a stock transformers folder: reloaded without aptune's code, the same logits as PEFT's model
    inputs = tmp_path / "batch.pt"
    torch.save(batch, inputs)
    code = ("import sys, torch, transformers; m = transformers.AutoModelForSequenceClassification.from_pretrained("
            "sys.argv[1]).eval(); b = torch.load(sys.argv[2]); print(m(**b).logits.tolist())")
    reloaded = subprocess.run([sys.executable, "-c", code, summary["export"], str(inputs)], capture_output=True,
                              text=True, check=True).stdout
    assert torch.allclose(torch.tensor(json.loads(reloaded.strip().splitlines()[-1])), wrapped["logits"], atol=1e-5)


def test_a_peer_refuses_what_belongs_to_apt():
    import pytest

    with pytest.raises(ValueError, match="prune.enabled=true contradicts"):
        load_config(None, ["peer.method=adalora"])
