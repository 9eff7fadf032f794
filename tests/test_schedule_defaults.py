"""The pruning schedule's defaults are fractions of the run, so ``APTConfig()`` fits any run that can hold ten pruning
steps, and the error for one that cannot names the shortest that can. The README's own-loop snippet runs as written
for 300 steps on a tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert

import aptune
from aptune import APT, APTConfig, APTModel, PruneConfig

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("steps", [32, 100, 300, 1000, 5000])
def test_the_default_schedule_fits_runs_of_any_length_that_hold_it(steps):
    APTConfig().validate(steps)  # raises when the window cannot hold the default ten pruning steps


def test_the_default_window_at_1000_steps_is_the_one_before_fractions():
    # start_step 200 and end_fraction 0.5 were the defaults: a 1000-step run keeps its schedule
    assert PruneConfig().window(1000) == (200, 500)
    assert PruneConfig(start_step=100, end_fraction=0.6).window(1000) == PruneConfig(start_fraction=0.1,
                                                                                      end_fraction=0.6).window(1000)


def test_a_run_too_short_names_the_shortest_that_holds_the_schedule():
    with pytest.raises(ValueError) as caught:
        APTConfig().validate(20)
    shortest = int(re.search(r"the shortest run that holds this schedule has train.steps=(\d+)", str(caught.value))[1])
    APTConfig().validate(shortest)  # the named length fits ...
    with pytest.raises(ValueError):
        APTConfig().validate(shortest - 1)  # ... and it is the shortest


def test_a_schedule_no_length_holds_says_so():
    with pytest.raises(ValueError, match="no number of train.steps holds this schedule"):
        APTConfig(prune=PruneConfig(start_fraction=0.6, end_fraction=0.5)).validate(1000)


def test_an_explicit_start_step_wins_over_the_start_fraction():
    assert PruneConfig(start_step=7, start_fraction=0.5).window(100) == (7, 50)


def _own_loop_snippet() -> str:
    text = README.read_text()
    section = text[text.index("### 2. Your own training loop"):]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_readme_own_loop_snippet_runs_as_written_for_300_steps(monkeypatch):
    code = _own_loop_snippet()
    code, count = re.subn(r"total_steps=\d+", "total_steps=300", code)
    assert count == 1, "the README's own-loop snippet no longer sets total_steps"

    def tiny_from_pretrained(name, num_labels=None, seed=None, **kwargs):  # the snippet's "minilm", tiny and offline
        torch.manual_seed(0)
        return APTModel(tiny_bert(num_labels=num_labels), seed=seed)

    monkeypatch.setattr(aptune.APTModel, "from_pretrained", staticmethod(tiny_from_pretrained))
    generator = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(3, 100, (4, 12), generator=generator),
                "attention_mask": torch.ones(4, 12, dtype=torch.long),
                "labels": torch.randint(0, 2, (4,), generator=generator)} for _ in range(300)]
    scope = {"batches": batches}
    exec(compile(code, str(README), "exec"), scope)
    model, apt = scope["model"], scope["apt"]
    assert apt.schedule.steps[-1] == 150  # the last pruning step at end_fraction 0.5 of 300
    assert model.num_params() / model.original_params == pytest.approx(0.4, abs=0.05)
