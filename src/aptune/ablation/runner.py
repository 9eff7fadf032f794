"""Run an ablation plan: every variant × task × seed in its own process, one result JSON per run.

For each run (``aptune.ablation.plan.RunSpec``) the runner

1. writes ``runs/<run_id>/run.yaml``: the plan's base config (``base:``) plus the run's override tree;
2. trains it with ``python -m aptune train --no-latency --config run.yaml output_dir=runs/<run_id>/train`` in
   a subprocess, so that the peak RSS the loop records is this run's alone (docs/design.md, metric definitions:
   the process's peak RSS is reported beside the model's own bytes);
3. measures the exported, merged model in fresh subprocesses (``aptune.ablation.inference``, one per batch
   size, and one for decoding speed when the plan's ``inference.generate`` asks), so that inference memory is
   mixed neither with what training left behind nor with another batch;
4. when the plan has ``evaluation``: runs ``aptune eval`` on the export (multiple-choice tasks, greedy answers
   to a prompts file) in one more process;
5. writes ``results/<run_id>.json`` in the PEFT method-comparison layout: ``run_info``, ``train_info``,
   ``inference_info``, ``eval_info``, ``meta_info``.

A variant with ``init_from: <earlier variant>`` starts from that run's export (its ``model.name`` is set to
it), e.g. prune-then-tune after LoRA; it fails with a clear error when the earlier run has not finished. A run whose result says ``status: ok`` and whose requested
overrides are unchanged (those export paths aside) is skipped on a re-run, also where the exports it used are
missing;
a failed run (non-zero exit, time-out) is recorded with the tail of its log and the plan goes on. Numbers
relative to other runs (time-to-accuracy, Jaccard overlaps, deltas) are computed by ``aptune report``,
never stored here as the only value.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

from aptune.ablation.metrics import HEADLINE_FRACTION, best_score, time_to_score
from aptune.ablation.plan import Plan, RunSpec, builds_on
from aptune.config import load_config, override_config
from aptune.data.files import iter_jsonl
from aptune.provenance import meta_info

SCHEMA_VERSION = 1
_METRIC_ABBREV = {"accuracy": "acc", "pearson": "pearson", "spearman": "spearman", "f1": "f1", "mcc": "mcc"}


# ------------------------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    # write-then-rename: an interrupted runner never leaves a half-written result that looks finished
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def log_tail(path: Path, lines: int = 40, chars: int = 6000) -> str:
    """The last lines of a subprocess log, with progress-bar redraws (``\\r``) collapsed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.split("\r")[-1].rstrip() for line in text.split("\n")]
    # drop blank lines and the caret underlines of Python tracebacks: more of the traceback fits
    kept = [line for line in kept if line.strip(" ^~")]
    return "\n".join(kept[-lines:])[-chars:]


def _jsonl(path: Path) -> list[dict]:
    return [record for _, record in iter_jsonl(path)] if path.exists() else []


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class _Failed(Exception):
    def __init__(self, phase: str, error: str, returncode: int | None = None):
        super().__init__(error)
        self.phase, self.error, self.returncode = phase, error, returncode


def _run_logged(command: list[str], log: Path, timeout: float | None, env: dict, phase: str) -> None:
    """Run ``command`` with stdout and stderr into ``log``; raise ``_Failed`` with the log's tail on failure."""
    with log.open("w") as f:
        try:
            proc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise _Failed(phase, f"timed out after {timeout:.0f} s\n{log_tail(log)}") from None
    if proc.returncode != 0:
        raise _Failed(phase, log_tail(log) or f"exit status {proc.returncode}", proc.returncode)


# ------------------------------------------------------------------------------------------- one run
def _result_skeleton(spec: RunSpec, plan: Plan, run_dir: Path, meta: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_info": {
            "name": spec.run_id, "variant": spec.variant.name, "task": spec.task, "seed": spec.seed,
            **{k: v for k, v in spec.variant.as_dict().items() if k != "name"},
            "plan_index": list(plan.variants).index(spec.variant.name),  # the report keeps the plan's order
            "plan": str(plan.path), "profile": plan.profile, "request": spec.overrides, "config": None,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "status": "running",
            "error": None, "failed_phase": None, "returncode": None, "command": None, "inference_command": None,
            "total_time": None, "run_dir": str(run_dir),
        },
        "train_info": None, "inference_info": None, "eval_info": None, "meta_info": meta,
    }


def run_yaml_text(plan: Plan, spec: RunSpec) -> str:
    """A run's ``run.yaml``, the config ``aptune train`` gets: the plan's base and the run's overrides, headed by
    what the run is."""
    return (f"# {spec.run_id}: {spec.variant.what or spec.variant.name}\n"
            + yaml.safe_dump(plan.run_config(spec), sort_keys=False))


def _train_info(summary: dict, records: list[dict], wall: float) -> dict:
    events = [r for r in records if r.get("event") in ("prune", "eval_at_target", "teacher_eval")]
    steps = [{k: r.get(k) for k in ("step", "loss", "lr", "mu", "params", "density", "tuning_params", "step_time",
                                    "peak_rss", "wall")} for r in records if "event" not in r]
    return {
        "train_time_s": summary["train_time_s"],  # the training loop's wall time (evaluations included)
        "process_time_s": wall,  # the whole `aptune train` process: start-up, loading, export too
        "peak_rss_bytes": summary["peak_rss_bytes"],
        "peak_memory_kind": "cpu peak RSS of the training process",
        "memory": summary.get("memory"),  # bytes of params + grads + optimizer state + saved activations, peak step
        "memory_breakdown": summary.get("memory_breakdown"),  # the process's bytes at its peak RSS, by holder
        "time_to_accuracy": None, "steps_to_accuracy": None,  # relative to full_finetune: computed by the report
        "curve": summary["history"], "steps": steps, "events": events,
        "pruning_accuracy": summary.get("pruning_accuracy"), "masks": summary.get("masks"),
        "ranks": summary.get("ranks"), "params": summary["params"], "original_params": summary["original_params"],
        "density": summary["density"], "export": summary["export"], "exported": exported(summary["export"]),
        "peer": summary.get("peer"),  # a peer's run: its tool's versions and what it was given
    }


def exported(folder: str | Path) -> dict:
    """Whether stock ``transformers`` loads an export folder without running the folder's own code (no ``auto_map``
    in its config); its parameter count is measured with the export (``inference_info.params``)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return {"needs_trust_remote_code": "auto_map" in config}


def run_one(spec: RunSpec, plan: Plan, run_dir: Path, meta: dict) -> dict:
    """Train, export and time one run; return its result (status ``ok`` or ``failed``), never raise for it."""
    start = time.perf_counter()
    if run_dir.exists():
        shutil.rmtree(run_dir)  # metrics.jsonl is appended to: a stale one would mix two runs
    run_dir.mkdir(parents=True)
    result = _result_skeleton(spec, plan, run_dir, {**meta, "threads": {"train": None, "inference": None}})
    info = result["run_info"]
    run_yaml = run_dir / "run.yaml"
    run_yaml.write_text(run_yaml_text(plan, spec))
    train_dir = run_dir / "train"
    command = [sys.executable, "-m", "aptune", "train", "--no-latency", "--config", str(run_yaml),
               f"output_dir={train_dir}"]
    info["command"] = shlex.join(command)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    threads = (spec.overrides.get("train") or {}).get("threads")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # also caps native libraries that do not ask torch
    try:
        t0 = time.perf_counter()
        _run_logged(command, run_dir / "train.log", plan.timeout_s, env, "train")
        train_wall = time.perf_counter() - t0
        summary = _read_json(train_dir / "summary.json")
        if summary is None:
            raise _Failed("train", f"no summary.json in {train_dir}\n{log_tail(run_dir / 'train.log')}")
        info["config"] = yaml.safe_load((train_dir / "config.yaml").read_text())
        result["meta_info"]["threads"]["train"] = info["config"]["train"]["threads"]
        result["train_info"] = _train_info(summary, _jsonl(train_dir / "metrics.jsonl"), train_wall)
        metric = summary["primary_metric"]
        result["eval_info"] = {
            "task": summary["task"], "primary_metric": metric,
            "metrics": [k for k in summary["final"] if k not in ("step", "wall", "n", "density")],
            "final": summary["final"], "best_after_pruning": summary["best_after_pruning"],
            "n_dev": summary["final"].get("n"),
        }

        # one fresh process per batch size: memory a larger batch leaves in the heap would otherwise hide
        # part of the next batch's peak (VmHWM − VmRSS before the passes)
        export, head = summary["export"], info["config"]["model"]["head"]
        info["inference_command"] = []
        inference_info = None
        for batch_size in plan.inference.batch_sizes:
            measured, timed = _measure_export(plan, export, head, run_dir, env, f"inference_b{batch_size}",
                                              ["--batch-sizes", str(batch_size)])
            info["inference_command"].append(timed)
            if inference_info is None:
                inference_info = measured
            else:  # one process per batch size: merge what each measured
                inference_info["by_batch"].update(measured["by_batch"])
                inference_info["model_memory"]["by_batch"].update(measured["model_memory"]["by_batch"])
        if plan.inference.generate:  # decoding speed in its own process too (its memory peak is the KV cache's)
            g = plan.inference.generate
            measured, timed = _measure_export(
                plan, export, head, run_dir, env, "inference_generate",
                ["--batch-sizes", "", "--generate", f"{g['batch_size']},{g['prompt_len']},{g['new_tokens']}"])
            info["inference_command"].append(timed)
            inference_info["generation"] = measured["generation"]
        inference_info["process_per_batch_size"] = True
        result["inference_info"] = inference_info
        result["meta_info"]["threads"]["inference"] = inference_info["threads"]
        if plan.evaluation is not None:
            result["eval_info"].update(_downstream(plan, export, run_dir, env, info))
        info["status"] = "ok"
    except _Failed as failure:
        info.update(status="failed", error=failure.error, failed_phase=failure.phase, returncode=failure.returncode)
    except Exception:  # noqa: BLE001  an unreadable output must cost one run, not the rest of the plan
        info.update(status="failed", error=traceback.format_exc(limit=5), failed_phase="collect")
    info["total_time"] = time.perf_counter() - start
    return result


def _threaded(command: list[str], env: dict, threads: int | None) -> tuple[list[str], dict]:
    """``command`` and its environment with ``threads`` torch threads (also capping native libraries)."""
    if not threads:
        return command, env
    return [*command, "--threads", str(threads)], {**env, "OMP_NUM_THREADS": str(threads)}


def _measure_export(plan: Plan, export: str, head: str, run_dir: Path, env: dict, stem: str,
                    what: list[str]) -> tuple[dict, str]:
    """One ``aptune.ablation.inference`` process on the export (``what``: its batch-size / generation arguments);
    returns what it measured and the command."""
    inf = plan.inference
    out_json = run_dir / f"{stem}.json"
    command, proc_env = _threaded(
        [sys.executable, "-m", "aptune.ablation.inference", export, "--out", str(out_json), *what, "--seq-len",
         str(inf.seq_len), "--warmup", str(inf.warmup), "--repeats", str(inf.repeats), "--head", head],
        env, inf.threads)
    _run_logged(command, run_dir / f"{stem}.log", plan.timeout_s, proc_env, "inference")
    return _read_json(out_json), shlex.join(command)


def _downstream(plan: Plan, export: str, run_dir: Path, env: dict, info: dict) -> dict:
    """``aptune eval`` on the export, in its own process: multiple-choice scores and greedy answers."""
    ev = plan.evaluation
    out_json = run_dir / "downstream.json"
    command = [sys.executable, "-m", "aptune", "eval", "--model", export, "--batch-size", str(ev.batch_size),
               "--seed", str(ev.seed), "--no-progress", "--output", str(out_json)]
    if ev.tasks:
        command += ["--task", ",".join(ev.tasks)]
    if ev.max_samples:
        command += ["--max-samples", str(ev.max_samples)]
    if ev.prompts is not None:
        command += ["--prompts", str(ev.prompts), "--max-new-tokens", str(ev.max_new_tokens)]
    command, eval_env = _threaded(command, env, ev.threads)
    info["downstream_command"] = shlex.join(command)
    _run_logged(command, run_dir / "downstream.log", plan.timeout_s, eval_env, "downstream")
    record = _read_json(out_json)
    if record is None:
        raise _Failed("downstream", f"no {out_json}\n{log_tail(run_dir / 'downstream.log')}")
    return {"downstream": record["results"], "generations": record.get("generations")}


def _progress(result: dict) -> str:
    info = result["run_info"]
    if info["status"] != "ok":
        last = (info["error"] or "").strip().splitlines()[-1:] or [""]
        return f"FAILED in {info['failed_phase']} ({last[0][:120]}), {_minutes(info['total_time'] or 0)}"
    ev = result["eval_info"]
    metric = ev["primary_metric"]
    scores = [task["acc"] for task in ev.get("downstream") or []]
    downstream = f", mean multiple-choice acc {sum(scores) / len(scores):.3f}" if scores else ""
    return (f"ok, {_METRIC_ABBREV.get(metric, metric)} {ev['final'][metric]:.3f}{downstream}, "
            f"{_minutes(info['total_time'])}")


def _start_from(spec: RunSpec, runs_dir: Path, plan: Plan, meta: dict) -> dict | None:
    """Point ``spec`` at the exports of the runs it builds on; a failed result when one of them has not finished."""
    for key, variant, earlier, _ in _earlier_runs(spec):
        previous = _read_json(runs_dir / "results" / f"{earlier}.json")
        export = _export_of(runs_dir, earlier)
        if not (previous and previous["run_info"]["status"] == "ok" and export.is_dir()):
            result = _result_skeleton(spec, plan, runs_dir / "runs" / spec.run_id, meta)
            result["run_info"].update(
                status="failed", failed_phase=key, total_time=0.0,
                error=f"{spec.variant.name} uses the export of {earlier} ({key}), which has not finished (no ok "
                      f"result with an export in {export}); run {variant} first")
            return result
    spec.overrides = with_earlier_exports(spec, runs_dir)
    return None


def earlier_exports(spec: RunSpec, runs_dir: str | Path) -> dict[str, Path]:
    """Setting -> the export in ``runs_dir`` it takes, for each run ``spec`` builds on (none: ``{}``); whether the
    export is there yet is the caller's question."""
    return {setting: _export_of(runs_dir, earlier) for _, _, earlier, setting in _earlier_runs(spec)}


def with_earlier_exports(spec: RunSpec, runs_dir: Path) -> dict:
    """``spec``'s overrides with the exports of the runs it builds on in ``runs_dir`` filled in.

    ``init_from``'s export becomes the run's ``model.name`` in the run's overrides, so ``run.yaml`` shows where the
    model came from.
    """
    overrides = spec.overrides
    for setting, export in earlier_exports(spec, runs_dir).items():
        section, name = setting.split(".")
        overrides = {**overrides, section: {**overrides.get(section, {}), name: str(export.resolve())}}
    return overrides


def _export_of(runs_dir: str | Path, run_id: str) -> Path:
    """Where the runner's run ``run_id`` exports its model (``aptune train``'s ``output_dir/export``)."""
    return Path(runs_dir) / "runs" / run_id / "train" / "export"


_FILLS = {"init_from": "model.name"}  # the setting each plan key fills


def _earlier_runs(spec: RunSpec) -> list[tuple[str, str, str, str]]:
    """(plan key, variant, run id, setting it fills) for each run ``spec`` builds on (its init_from)."""
    return [(key, name, f"{name}__{spec.task}__seed{seed}", _FILLS[key])
            for key, name, seed in builds_on(spec.variant.init_from, None, spec.seed)]


def _finished(previous: dict | None, spec: RunSpec) -> bool:
    """Whether ``previous`` is an ok result of the run ``spec`` requests now.

    A chained run's request holds the path of the export it used (``model.name`` for ``init_from``, set by
    :func:`with_earlier_exports`), folders of the machine that ran
    it; the comparison leaves those paths out, so a result copied from another machine, or from another runs
    folder, still counts as finished.
    """
    if not previous or previous["run_info"]["status"] != "ok":
        return False
    settings = [setting for *_, setting in _earlier_runs(spec)]
    return _without(previous["run_info"]["request"], settings) == _without(spec.overrides, settings)


def _without(request: dict, settings: list[str]) -> dict:
    """``request`` less the dotted ``settings``, and less any section that leaves empty."""
    request = {section: dict(values) if isinstance(values, dict) else values for section, values in request.items()}
    for setting in settings:
        section, name = setting.split(".")
        if isinstance(request.get(section), dict):
            request[section].pop(name, None)
            if not request[section]:
                del request[section]
    return request


# ------------------------------------------------------------------------------------------- the plan
def run_plan(plan: Plan, runs_dir: str | Path, only: list[str] | None = None,
             echo: Callable[..., None] = print) -> list[dict]:
    """Run (or skip, when finished) every run of ``plan``; return all their results.

    Two variants whose resolved configs are the same (``fixed_rank_r8`` and ``no_adaptive_tuning``) train once:
    the second gets a copy of the first's result, marked ``same_run_as``. After the runs, every export of the
    plan is timed side by side in one process (:func:`time_side_by_side`) and each result gets its time to 97%
    of ``full_finetune``'s dev score (:func:`fill_time_to_accuracy`).

    Args:
        plan: a loaded plan (``load_plan``).
        runs_dir: where ``runs/<run_id>/`` and ``results/<run_id>.json`` go.
        only: variant names to run (all when None).
        echo: progress printer (one line per run).
    """
    runs_dir = Path(runs_dir)
    (runs_dir / "results").mkdir(parents=True, exist_ok=True)
    specs = plan.expand(only)
    owners = same_runs(plan, specs, runs_dir)
    meta = None
    results: dict[str, dict] = {}
    for i, spec in enumerate(specs, 1):
        prefix = f"[{i}/{len(specs)}] {spec.variant.name} {spec.task} seed {spec.seed}:"
        path = runs_dir / "results" / f"{spec.run_id}.json"
        if meta is None:
            meta = meta_info()
        owner = owners.get(spec.run_id)
        if owner is not None:
            result = _copy_of(results[owner], spec)
            _write_json(path, result)
            echo(f"{prefix} same config as {owner}: reported under both names", flush=True)
            results[spec.run_id] = result
            continue
        previous = _read_json(path)
        if _finished(previous, spec):
            echo(f"{prefix} skipped (finished earlier: {_progress(previous)})", flush=True)
            results[spec.run_id] = previous
            continue
        # a run that builds on another's export: its overrides name that export (after the skip check, so that
        # a finished result is kept even where the export it used is missing)
        blocked = _start_from(spec, runs_dir, plan, meta)
        echo(f"{prefix} running ... ", end="", flush=True)
        result = blocked or run_one(spec, plan, runs_dir / "runs" / spec.run_id, meta)
        _write_json(path, result)
        echo(_progress(result), flush=True)
        results[spec.run_id] = result
    done = list(results.values())
    before = [json.dumps(r, sort_keys=True) for r in done]
    if plan.inference.side_by_side:
        time_side_by_side(plan, runs_dir, done, echo)
    fill_time_to_accuracy(done)
    for result, text in zip(done, before):
        if json.dumps(result, sort_keys=True) != text:  # a skipped run's file stays untouched when nothing changed
            _write_json(runs_dir / "results" / f"{result['run_info']['name']}.json", result)
    ok = sum(r["run_info"]["status"] == "ok" for r in done)
    echo(f"{ok} of {len(done)} runs finished; results in {runs_dir / 'results'}")
    return done


# ------------------------------------------------------------------------------ the same config twice
def same_runs(plan: Plan, specs: list[RunSpec], runs_dir: str | Path) -> dict[str, str]:
    """Run id -> the earlier run id with the same resolved config (everything but the output folder).

    A run built on an earlier one is resolved with that run's export in ``runs_dir`` (as the runner writes it), so
    two runs that start from, or distil from, different runs are not the same run.
    """
    first: dict[str, str] = {}
    owners = {}
    for spec in specs:
        key = _resolved_key(plan, spec, runs_dir)
        if key in first:
            owners[spec.run_id] = first[key]
        else:
            first[key] = spec.run_id
    return owners


def _resolved_key(plan: Plan, spec: RunSpec, runs_dir: str | Path) -> str:
    try:
        config = override_config(load_config(plan.base), with_earlier_exports(spec, runs_dir)).to_dict()
    except (ValueError, FileNotFoundError):
        return spec.run_id  # an invalid config is nobody's twin: it runs, and fails, on its own
    config.pop("output_dir", None)
    return json.dumps(config, sort_keys=True)


def _copy_of(result: dict, spec: RunSpec) -> dict:
    """``result`` reported under ``spec``'s variant name (its run info says whose run it is)."""
    copy = json.loads(json.dumps(result))
    info = copy["run_info"]
    info.update({k: v for k, v in spec.variant.as_dict().items() if k != "patch"}, variant=spec.variant.name,
                name=spec.run_id, same_run_as=result["run_info"]["name"], request=spec.overrides)
    return copy


# ------------------------------------------------------------------------------------ after the runs
def time_side_by_side(plan: Plan, runs_dir: Path, results: list[dict], echo: Callable[..., None] = print) -> None:
    """Time every finished export of each task in one process, interleaved (``aptune bench``), per batch size,
    and put the numbers into each result's ``inference_info.side_by_side``.

    A finished run whose export is not on this machine (its result was copied from another) is left out and
    named; its result keeps what it had."""
    inf = plan.inference
    for task in sorted({r["run_info"]["task"] for r in results}):
        finished = [r for r in results if r["run_info"]["task"] == task and r["run_info"]["status"] == "ok"
                    and not r["run_info"].get("same_run_as") and r.get("train_info")]
        away = [r["run_info"]["name"] for r in finished if not Path(r["train_info"]["export"]).is_dir()]
        if away:
            echo(f"not timed side by side (export not on this machine): {', '.join(away)}", flush=True)
        owners = [r for r in finished if r["run_info"]["name"] not in away]
        if len(owners) < 1:
            continue
        timings = {}
        for batch in inf.batch_sizes:
            timings[str(batch)] = _bench(plan, runs_dir, owners, task, batch, echo)
        names = [r["run_info"]["name"] for r in owners]
        for result in results:
            run = result["run_info"].get("same_run_as") or result["run_info"]["name"]
            if result.get("inference_info") is not None and run in names:
                side = {b: t["models"][run] for b, t in timings.items()}
                result["inference_info"]["side_by_side"] = {
                    **{b: {k: row["latency"][k] for k in ("median_s", "p90_s", "throughput")} for b, row in side.items()},
                    "runs": names, "command": {b: t["command"] for b, t in timings.items()}}


def _bench(plan: Plan, runs_dir: Path, owners: list[dict], task: str, batch: int, echo) -> dict:
    """One ``aptune bench`` process over the exports (reused when an earlier call timed the same runs)."""
    inf = plan.inference
    out = runs_dir / f"side_by_side_{task}_b{batch}.json"
    names = [r["run_info"]["name"] for r in owners]
    head = owners[0]["run_info"]["config"]["model"]["head"]
    command = [sys.executable, "-m", "aptune", "bench", *[f"{r['run_info']['name']}={r['train_info']['export']}"
                                                          for r in owners],
               "--head", head, "--batch-size", str(batch), "--seq-len", str(inf.seq_len), "--repeats",
               str(inf.repeats), "--warmup", str(inf.warmup), "--json", str(out)]
    command, env = _threaded(command, dict(os.environ, TRANSFORMERS_VERBOSITY="error"), inf.threads)
    previous = _read_json(out)
    if previous and list(previous["models"]) == names and previous.get("command") == shlex.join(command):
        return previous
    echo(f"timing {len(names)} exports of {task} side by side at batch {batch} ... ", end="", flush=True)
    _run_logged(command, runs_dir / f"side_by_side_{task}_b{batch}.log", None, env, "side_by_side")
    report = _read_json(out)
    report["command"] = shlex.join(command)
    _write_json(out, report)
    echo("done", flush=True)
    return report


def fill_time_to_accuracy(results: list[dict]) -> None:
    """Each finished run's wall time and steps until its dev metric first reached 97% of full_finetune's best
    dev score on the same task and seed (None when never, or without a full_finetune run)."""
    for result in results:
        train = result.get("train_info")
        if result["run_info"]["status"] != "ok" or not train:
            continue
        info = result["run_info"]
        reference = [r for r in results if r["run_info"]["variant"] == "full_finetune" and r["run_info"]["status"] == "ok"
                     and r["run_info"]["task"] == info["task"] and r["run_info"]["seed"] == info["seed"]]
        best = best_score(reference[0]) if reference else None
        target = None if best is None else HEADLINE_FRACTION * best
        wall, step = time_to_score(result, target) if target is not None else (None, None)
        train.update(accuracy_target=target, time_to_accuracy=wall, steps_to_accuracy=step)
