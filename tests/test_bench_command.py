"""``aptune bench`` on tiny models saved to folders: every model is in the report with sane numbers.

No timing assertions: the numbers only have to exist, be positive and be consistent with each other.
"""

from __future__ import annotations

import json

import pytest
from conftest import random_binary_masks, tiny_bert, tiny_llama

from aptune.cli import main
from aptune.model import APTModel

TINY_SHAPE = ["--batch-size", "2", "--seq-len", "8", "--repeats", "2", "--warmup", "1"]


def _dense_and_export(model, folder):
    """Save ``model`` as it is and, pruned by random masks, as an aptune export."""
    model.save_pretrained(folder / "dense")
    apt = APTModel(model, seed=0)
    random_binary_masks(apt, seed=0)
    apt.export(folder / "export")
    return folder / "dense", folder / "export"


def _check_report(report: dict, names: list[str]) -> None:
    assert list(report["models"]) == names and report["reference"] == names[0]
    for row in report["models"].values():
        timing = row["latency"]
        assert row["params"] > 0 and row["weight_bytes"] == 4 * row["params"]  # float32
        assert 0 < timing["median_s"] <= timing["p90_s"] and timing["throughput"] > 0 and timing["repeats"] == 2
        assert row["median_ratio_to_first"] > 0
    assert report["models"][names[0]]["median_ratio_to_first"] == 1.0
    dense, export = (report["models"][name] for name in names)
    assert export["params"] < dense["params"]  # the export is physically smaller


def test_bench_reports_every_classifier_with_positive_numbers(tmp_path, capsys):
    dense, export = _dense_and_export(tiny_bert(), tmp_path)
    out = tmp_path / "bench" / "report.json"
    assert main(["bench", f"dense={dense}", f"pruned={export}", *TINY_SHAPE, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_report(report, ["dense", "pruned"])
    printed = capsys.readouterr().out
    assert "| dense |" in printed and "| pruned |" in printed and "median / dense" in printed


def test_bench_times_prefill_and_decoding_of_causal_lms(tmp_path):
    dense, export = _dense_and_export(tiny_llama(), tmp_path)
    out = tmp_path / "report.json"
    assert main(["bench", str(dense), f"apt={export}", "--head", "causal-lm", *TINY_SHAPE, "--generate", "1,4,3",
                 "--generate-repeats", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_report(report, [str(dense), "apt"])
    for row in report["models"].values():
        generation = row["generation"]
        assert generation["new_tokens"] == 3 and generation["median_s"] > 0 and generation["tokens_per_s"] > 0
        assert row["tokens_per_s_ratio_to_first"] > 0


def test_bench_loads_every_model_in_the_dtype_asked(tmp_path, capsys):
    dense, export = _dense_and_export(tiny_llama(), tmp_path)
    out = tmp_path / "report.json"
    assert main(["bench", str(dense), f"apt={export}", "--head", "causal-lm", *TINY_SHAPE, "--device", "cpu",
                 "--dtype", "bfloat16", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["dtype"] == "bfloat16" and report["machine"]["device"] == "cpu"
    assert all(row["weight_bytes"] == 2 * row["params"] for row in report["models"].values())
    assert ", bfloat16; batch 2 x 8" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["a=minilm", "a=minilm"], "given twice"),
    (["=minilm"], "expected NAME=MODEL"),
    (["minilm", "--generate", "1,64"], "three positive integers"),
    (["minilm", "--repeats", "0"], "--repeats must be at least 1"),
])
def test_bench_refuses_bad_arguments_by_name(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_command_loader_is_strict(monkeypatch):
    import aptune.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "no_such_command"))
    with pytest.raises(ImportError, match="no_such_command"):
        cli.build_parser()
