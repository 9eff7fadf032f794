"""The official code's self-distillation, as options: the teacher renewed at decay starts is the model just scored
(the same logits), the end of distillation reloads the best adapters and retrains at 0.1x the learning rate, and the
plan's official pair differs in exactly the settings its description names."""

from __future__ import annotations

import json

import torch
from test_train_loop import TINY_RUN

from aptune.ablation.plan import load_plan
from aptune.config import load_config
from aptune.train import recipe, train

OFFICIAL = ["distill.enabled=true", "distill.refresh=decay_start", "train.eval_every=4"]


def _records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_teacher_renewed_at_a_decay_start_is_the_model_just_scored(tiny_base, tmp_path, monkeypatch):
    compared = []
    offer = recipe._offer_teacher

    def offer_and_compare(run, step):
        offer(run, step)
        if run.apt.best is None or not run.apt.has_teacher:
            return
        batch = next(iter(run.batches))
        run.model.eval()
        with torch.no_grad():
            student = run.model(**batch).logits
        with run.apt.teacher_view():
            teacher = run.model(**batch).logits
        run.model.train()
        compared.append((step, torch.equal(student, teacher)))

    monkeypatch.setattr(recipe, "_offer_teacher", offer_and_compare)
    run = tmp_path / "run"
    train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, *OFFICIAL]))
    records = _records(run)
    checks = [r for r in records if r.get("event") == "teacher_check"]
    teachers = [r for r in records if r.get("event") == "teacher_eval"]
    starts = json.loads((run / "schedule.json").read_text())
    assert [c["step"] for c in checks] == _decay_starts(starts)
    assert teachers and teachers[0]["step"] == checks[0]["step"]  # the first check always renews: no best yet
    for teacher in teachers:  # each renewal's teacher scores exactly what triggered it
        assert teacher["student"] == teacher["accuracy"]
        assert next(c for c in checks if c["step"] == teacher["step"])["accuracy"] == teacher["accuracy"]
    # the teacher's logits right after a check are the student's: the teacher is the model that was scored
    refreshed = {t["step"] for t in teachers}
    assert [same for step, same in compared if step in refreshed] == [True] * len(refreshed)
    # no refresh from the regular evaluations
    assert {t["step"] for t in teachers} <= {c["step"] for c in checks}


def _decay_starts(schedules: dict) -> list[int]:
    from dataclasses import fields

    from aptune.search.schedule import PruningSchedule

    return PruningSchedule(**{f.name: schedules[f.name] for f in fields(PruningSchedule)}).decay_starts()


def test_retraining_reloads_the_best_adapters_since_the_last_cut_at_a_tenth_of_the_learning_rate(tiny_base, tmp_path,
                                                                                               monkeypatch):
    reloaded = {}
    start = recipe._start_retraining

    def record(run, step):
        reloaded["best"] = run.retrain_best
        start(run, step)
        reloaded["params"] = [q.detach().clone() for q in run.params]

    monkeypatch.setattr(recipe, "_start_retraining", record)
    run = tmp_path / "run"
    train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN, *OFFICIAL,
                             "distill.retrain_from=0.9"]))  # 24 steps: pruning ends at 18, retraining at 21
    records = _records(run)
    evals = {r["step"]: r["accuracy"] for r in records if r.get("event") == "eval"}
    last_cut = max(r["step"] for r in records if r.get("event") == "prune")
    window = {s: a for s, a in evals.items() if last_cut <= s <= 21}
    best_step = max(window, key=lambda s: (window[s], -s))  # the first of equal bests
    retrain = next(r for r in records if r.get("event") == "retrain")
    assert retrain["step"] == 21 and retrain["reloaded_from"] == best_step == reloaded["best"]["step"]
    assert all(torch.equal(a, b) for a, b in zip(reloaded["params"], reloaded["best"]["tensors"]))
    steps = {r["step"]: r for r in records if "event" not in r}
    assert steps[20]["mu"] == 1.0 and steps[24]["mu"] == 0.0  # mu = 1 after the last cut until the retraining
    assert steps[24]["lr"] < 0.1 * 1e-3  # 0.1x train.lr=1e-3, decaying


def test_the_official_pair_differs_in_exactly_the_named_settings():
    plan = load_plan("configs/ablations/apt_plan.yaml", profile="standard")
    configs = {spec.variant.name: _flat(spec.overrides) for spec in plan.expand()
               if spec.variant.name.startswith("official_arms") and spec.seed == 42}
    distill, plain = configs["official_arms_distill"], configs["official_arms_no_distill"]
    differing = {k for k in distill.keys() | plain.keys() if distill.get(k) != plain.get(k)}
    assert differing == {"distill.enabled", "distill.refresh", "distill.retrain_from", "adapter.targets"}
    assert distill["adapter.targets"] == plain["adapter.targets"] + ["head"]
    assert distill["adapter.train_head"] is plain["adapter.train_head"] is False  # the head frozen in both arms


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
