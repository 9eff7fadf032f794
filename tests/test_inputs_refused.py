"""Inputs that used to pass silently or fail late are refused at once with a message that says what to do:
unknown model names, a density that leaves the model nothing to compute, and overrides placed after the flags
(parsed only: nothing here trains)."""

from __future__ import annotations

import re
import time

import pytest
import torch
from conftest import tiny_bert

import aptune.models.loading as loading
from aptune.cli import build_parser, main, parse_command_line
from aptune.commands.prune import search_density
from aptune.model import AdapterConfig, APTModel
from aptune.models import resolve_model_source
from aptune.salience import build_scorer
from aptune.search import EmptyKeepSetError, search_keep_set

# ------------------------------------------------------------------------------------------ model names


def test_a_name_that_is_nothing_is_refused_at_once():
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as caught:
        resolve_model_source("nosuchmodel")
    assert str(caught.value) == ("no model `nosuchmodel`: not a short name (minilm, smollm2-135m), not a folder, "
                                 "and not a hub id (org/name)")
    assert time.perf_counter() - started < 5  # no hub retries


def test_a_hub_id_offline_and_not_cached_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"^model `nosuchorg/nosuchmodel` is a hub id, but the hub is "
                                                r"unreachable offline \(HF_HUB_OFFLINE is set\)"):
        resolve_model_source("nosuchorg/nosuchmodel")
    monkeypatch.setattr(loading, "_in_hub_cache", lambda repo_id: repo_id == "someorg/cached")
    assert resolve_model_source("someorg/cached").path == "someorg/cached"  # a cached id loads offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model_source("nosuchorg/nosuchmodel").path == "nosuchorg/nosuchmodel"  # online: the hub decides


def test_an_old_single_word_hub_id_counts_when_it_is_in_the_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "_in_hub_cache", lambda repo_id: repo_id == "gpt2")
    assert resolve_model_source("gpt2").path == "gpt2"


def test_the_command_line_reports_an_unknown_model_as_an_error(capsys):
    assert main(["eval", "--model", "nosuchmodel", "--task", "sst2"]) == 2
    assert "aptune eval: error: no model `nosuchmodel`: not a short name" in capsys.readouterr().err


# --------------------------------------------------------------------------------- empty keep sets


def _scored_tiny_bert(seed=0):
    torch.manual_seed(seed)
    apt = APTModel(tiny_bert(num_labels=2), AdapterConfig(rank=0), seed=seed)
    scorer = build_scorer("magnitude").attach(apt)
    scorer.update()
    return apt, scorer.scores()


@pytest.mark.parametrize("round_to", [1, 8])
def test_a_budget_that_keeps_no_hidden_dimension_is_refused_with_the_smallest_that_works(round_to):
    apt, scores = _scored_tiny_bert()
    with pytest.raises(EmptyKeepSetError) as caught:
        search_keep_set(scores, apt.state, apt.counter, 0, round_to=round_to)
    error = caught.value
    assert error.missing == "no hidden dimension" and error.smallest_budget > 0
    assert f"the smallest budget that keeps one hidden dimension and one attention head or FFN neuron is " \
           f"{error.smallest_budget:,} parameters: raise the density" in str(error)
    keep = search_keep_set(scores, apt.state, apt.counter, error.smallest_budget, round_to=round_to)
    assert int(keep.hidden.sum()) >= round_to
    assert any(m.sum() > 0 for m in keep.heads.values()) or any(m.sum() >= round_to for m in keep.ffn.values())
    with pytest.raises(EmptyKeepSetError):  # and it is the smallest
        search_keep_set(scores, apt.state, apt.counter, error.smallest_budget - 1, round_to=round_to)


def test_a_keep_set_of_hidden_dimensions_alone_is_refused():
    apt, scores = _scored_tiny_bert()
    scores["hidden"] = torch.full_like(torch.as_tensor(scores["hidden"]), 1e6)  # hidden dims rank first
    hidden_only = apt.counter.count({n: 0 for n in apt.state.heads}, {n: 0 for n in apt.state.ffn},
                                    len(apt.state.hidden))
    with pytest.raises(EmptyKeepSetError, match="keeps no attention head and no FFN neuron anywhere"):
        search_keep_set(scores, apt.state, apt.counter, hidden_only)


def test_aptune_prune_names_the_density_and_the_smallest_that_works(tmp_path, capsys):
    model_dir, output = tmp_path / "tiny", tmp_path / "export"
    tiny_bert(num_labels=2).save_pretrained(model_dir)
    assert main(["prune", "--model", str(model_dir), "--density", "1e-6", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "--density 1e-06 keeps no hidden dimension, so the pruned model would compute nothing" in err
    assert not output.exists()  # nothing exported
    smallest = float(re.search(r"with --round-to 8 is ([0-9.e-]+): raise the density", err).group(1))
    apt, scores = _scored_tiny_bert()
    keep = search_density(scores, apt, smallest, round_to=8)  # the suggested density works
    assert keep.hidden.sum() > 0


# ---------------------------------------------------------------------------- overrides after flags


def test_overrides_may_follow_the_flags():
    args = parse_command_line(["train", "--config", "c.yaml", "--no-latency", "prune.density=0.5", "train.steps=9"])
    assert (args.config, args.no_latency, args.overrides) == ("c.yaml", True, ["prune.density=0.5", "train.steps=9"])
    args = parse_command_line(["train", "a.b=1", "--config", "c.yaml", "c.d=2"], build_parser())
    assert args.overrides == ["a.b=1", "c.d=2"]  # command-line order, so a later value wins
    args = parse_command_line(["train", "--config", "c.yaml", "a.b=1", "--no-latency", "c.d=2", "a.b=3"])
    assert (args.no_latency, args.overrides) == (True, ["a.b=1", "c.d=2", "a.b=3"])


def test_words_that_are_not_overrides_are_still_unrecognised(capsys):
    with pytest.raises(SystemExit):
        parse_command_line(["train", "--config", "c.yaml", "a.b=1", "--no-latency", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_command_line(["train", "--config", "c.yaml", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # eval takes no overrides
        parse_command_line(["eval", "--model", "m", "--task", "sst2", "prune.density=0.5"])
    assert "unrecognized arguments: prune.density=0.5" in capsys.readouterr().err
