"""The self-distillation teacher is measured: its own dev metric is logged each time it is taken (at the first
pruning step) or refreshed (at a new best dev score), beside the student's score that made it the teacher; and
measuring it moves no number of the run."""

from __future__ import annotations

import json

from test_train_loop import TINY_RUN

from aptune.config import load_config
from aptune.train import recipe, train

RUN = [*TINY_RUN, "distill.enabled=true", "train.eval_every=4"]
CLOCK = ("wall", "step_time", "peak_rss")  # what differs between two runs of the same seed


def _records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _expected_refreshes(records: list[dict], first_teacher: int) -> list[tuple[int, float]]:
    """(step, student score) of every eval that was a new best once the teacher existed: report_score's rule."""
    best, refreshes = None, []
    for record in (r for r in records if r.get("event") == "eval"):
        score = record["accuracy"]
        if best is None or score > best:
            best = score
            if record["step"] >= first_teacher:
                refreshes.append((record["step"], score))
    return refreshes


def test_every_teacher_is_evaluated_and_the_run_is_unchanged(tiny_base, tmp_path, monkeypatch):
    train(load_config(None, [f"output_dir={tmp_path / 'measured'}", f"model.name={tiny_base}", *RUN]))
    records = _records(tmp_path / "measured")
    teachers = [r for r in records if r.get("event") == "teacher_eval"]
    first_prune = next(r["step"] for r in records if r.get("event") == "prune")
    assert teachers and teachers[0]["step"] == first_prune and teachers[0]["student"] is None
    assert [(t["step"], t["student"]) for t in teachers[1:]] == _expected_refreshes(records, first_prune)
    assert all(0 <= t["accuracy"] <= 1 and t["n"] == 64 for t in teachers)

    # the same run without measuring the teacher: every other record the same, to the bit
    monkeypatch.setattr(recipe, "_evaluate_teacher", lambda *args: None)
    train(load_config(None, [f"output_dir={tmp_path / 'plain'}", f"model.name={tiny_base}", *RUN]))

    def numbers(run):
        return [{k: v for k, v in r.items() if k not in CLOCK} for r in _records(run)
                if r.get("event") != "teacher_eval"]

    assert numbers(tmp_path / "measured") == numbers(tmp_path / "plain")


def test_the_report_has_a_teacher_line_per_distilling_run():
    from aptune.ablation.report import _teacher_lines

    def result(variant, seed, events):
        return {"run_info": {"variant": variant, "seed": seed}, "train_info": {"events": events}}

    first = {"event": "teacher_eval", "step": 162, "student": None, "accuracy": 0.80}
    results = [result("apt", 42, [first, {"event": "teacher_eval", "step": 300, "student": 0.85, "accuracy": 0.84}]),
               result("apt", 43, [first, {"event": "teacher_eval", "step": 400, "student": 0.86, "accuracy": 0.88}]),
               result("lora", 42, [{"event": "prune", "step": 10}])]
    lines = _teacher_lines(results, ["apt", "lora"], "accuracy")
    rows = [line for line in lines if line.startswith("| `")]
    assert rows == ["| `apt` | 2.0 | 0.8000 | +0.5 pts (min -1.0, max +2.0; 2 renewals) |"]
