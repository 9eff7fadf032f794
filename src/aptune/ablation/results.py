"""Reading an ablation's result JSONs: loading, picking runs out, and saying where the numbers come from.

The runner writes one JSON per run (``run_info``, ``train_info``, ``inference_info``, ``eval_info``,
``meta_info``). Both reports (``report``, ``compare_report``) start here, so the few ways of selecting runs
live in one place and every other module of the report can stay free of file handling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from aptune.ablation.paths import portable, runs_folders


# ------------------------------------------------------------------------------------------ loading
def load_results(runs_dir: str | Path) -> list[dict]:
    """All result JSONs of a runs folder (``RUNS_DIR/results/*.json``, or ``RUNS_DIR/*.json``)."""
    runs_dir = Path(runs_dir)
    folder = runs_dir / "results" if (runs_dir / "results").is_dir() else runs_dir
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and "run_info" in data:
            results.append(data)
    if not results:
        raise FileNotFoundError(f"no result JSONs in {folder} (run `aptune ablate` first)")
    return results


def report_folder(runs_dir: Path, out_dir: str | Path | None) -> Path:
    """The folder a report is written to (``RUNS_DIR/report`` unless given), created if missing."""
    out = Path(out_dir) if out_dir else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------ selecting runs
def finished(results: list[dict]) -> list[dict]:
    """The runs that trained, were timed and evaluated: only these have numbers to report."""
    return [r for r in results if r["run_info"]["status"] == "ok"]


def failed(results: list[dict]) -> list[dict]:
    """The runs that stopped with an error; reports list them rather than drop them silently."""
    return [r for r in results if r["run_info"]["status"] != "ok"]


def find_runs(results: list[dict], variant: str, task: str, seed: int | None = None) -> list[dict]:
    """The runs of one variant on one task (all seeds, or one)."""
    return [r for r in results if r["run_info"]["variant"] == variant and r["run_info"]["task"] == task
            and (seed is None or r["run_info"]["seed"] == seed)]


def primary_metric(result: dict) -> str:
    return result["eval_info"]["primary_metric"]


def dev_scores(result: dict) -> list[tuple[int, float, float]]:
    """(step, wall, primary dev metric) of every evaluation of a run."""
    metric = primary_metric(result)
    return [(h["step"], h["wall"], h[metric]) for h in result["train_info"]["curve"] if metric in h]


def _prune_section(result: dict) -> dict:
    return (result["run_info"].get("config") or {}).get("prune") or {}


def prunes(result: dict) -> bool:
    """Whether the run pruned: runs that did not have no kept-block overlap or pruning accuracy to show."""
    return bool(_prune_section(result).get("enabled"))


def pruning_accuracy(result: dict) -> float | None:
    """The dev metric at the target density before recovery, or None where the run did not measure it there.

    A run cut before tuning reaches its density at step 0 and is evaluated there. Older results of such runs carry
    the evaluation at the last scheduled (rank-growth) step, after that many steps of recovery: not this number."""
    if not prunes(result):
        return None
    train = result["train_info"]
    cut_before = _prune_section(result).get("before_tuning")
    steps = [e["step"] for e in train.get("events") or [] if e.get("event") == "eval_at_target"]
    if cut_before and steps and steps[-1] != 0:
        return None
    return train.get("pruning_accuracy")


def same_run_as(results: list[dict], variant: str, task: str) -> str | None:
    """The variant whose run this variant's results copy (two variants with one resolved config run once).

    ``run_info.same_run_as`` names the run (``no_adaptive_tuning__sst2__seed42``); a reader wants the variant,
    which is the same for every seed. Where that run is not among ``results``, its name is kept as it is.
    """
    owner = next((r["run_info"]["same_run_as"] for r in find_runs(results, variant, task)
                  if r["run_info"].get("same_run_as")), None)
    if owner is None:
        return None
    return next((r["run_info"]["variant"] for r in results if r["run_info"]["name"] == owner), owner)


def variant_order(results: list[dict]) -> list[str]:
    """Variants as a reader expects them: the method, then references, then ablations, each in plan order."""
    order = {"method": 0, "reference": 1, "ablation": 2}
    seen: dict[str, tuple] = {}
    for r in results:
        info = r["run_info"]
        seen.setdefault(info["variant"], (order.get(info.get("role"), 3), info.get("plan_index", 10**6),
                                          info["variant"]))
    return [v for v, _ in sorted(seen.items(), key=lambda item: item[1])]


def ablation_groups(results: list[dict], variants: list[str]) -> dict[str, list[str]]:
    """Ablation variants by the plan's ``group`` (e.g. the fixed ranks), so one table compares them together."""
    groups: dict[str, list[str]] = {}
    for variant in variants:
        info = next(r["run_info"] for r in results if r["run_info"]["variant"] == variant)
        if info.get("role") == "ablation":
            groups.setdefault(info.get("group") or variant, []).append(variant)
    return groups


# ------------------------------------------------------------------------------------------ what was measured
def side_by_side_timings(inference_info: dict | None) -> dict[str, dict]:
    """The per-batch entries of ``inference_info.side_by_side``; its other keys (``runs``, ``command``) are
    not batch sizes and are left out."""
    timings = (inference_info or {}).get("side_by_side") or {}
    return {batch: entry for batch, entry in timings.items() if str(batch).isdigit() and isinstance(entry, dict)}


def model_memory_by_batch(inference_info: dict | None) -> dict[str, dict]:
    """``inference_info.model_memory.by_batch``: weights + peak activations of one forward, per batch size."""
    return ((inference_info or {}).get("model_memory") or {}).get("by_batch") or {}


@dataclass(frozen=True)
class Sources:
    """Which measurements a report's results carry. Newer runners add fields that older result files lack;
    the report shows the newer measurement where any run has it and falls back to the older one otherwise.

    Attributes:
        batch_sizes: every timed batch size, ascending.
        side_by_side: latency from all exports timed together in one process (``inference_info.side_by_side``).
        side_by_side_command: the command(s) of that timing, for the protocol (one per batch size when the
            runner timed each batch size in its own process).
        model_memory: inference memory as weights + peak activations (``inference_info.model_memory``).
        train_memory: training memory in model bytes (``train_info.memory``).
        runner_time_to_accuracy: time/steps to 97% filled in by the runner (``train_info.accuracy_target``).
    """

    batch_sizes: tuple[int, ...] = (32, 128)
    side_by_side: bool = False
    side_by_side_command: str | None = None
    model_memory: bool = False
    train_memory: bool = False
    runner_time_to_accuracy: bool = False


def measurement_sources(results: list[dict]) -> Sources:
    """What the finished runs among ``results`` measured (see ``Sources``)."""
    done = finished(results)
    inference = [r["inference_info"] for r in done if r.get("inference_info")]
    batches = {int(b) for inf in inference for b in
               [*inf.get("by_batch", {}), *side_by_side_timings(inf), *model_memory_by_batch(inf)]}
    timed_together = [inf["side_by_side"] for inf in inference if side_by_side_timings(inf)]
    return Sources(
        batch_sizes=tuple(sorted(batches)) or Sources.batch_sizes,
        side_by_side=bool(timed_together),
        side_by_side_command=next((_commands(t["command"], runs_folders(done)) for t in timed_together
                                   if t.get("command")), None),
        model_memory=any(model_memory_by_batch(inf) for inf in inference),
        train_memory=any((r["train_info"].get("memory") or {}).get("total_bytes") is not None for r in done),
        runner_time_to_accuracy=any(r["train_info"].get("accuracy_target") is not None for r in done),
    )


def _commands(command: str | dict, folders: list[str]) -> str:
    """A command, or one per batch size (``{"32": "...", "128": "..."}``), as one line of text, its paths as a
    reader types them (``aptune.ablation.paths``: ``python``, ``RUNS/`` for ``folders``)."""
    if isinstance(command, dict):
        return "; ".join(f"batch {batch}: `{portable(text, folders)}`" for batch, text in command.items())
    return f"`{portable(command, folders)}`"


# ------------------------------------------------------------------------------------------ provenance
def provenance(all_results: list[dict], n_failed: int) -> list[str]:
    """Two lines saying where a report's numbers come from: plan, runs, commits, versions, machines."""
    runs = finished(all_results) or all_results
    tasks = sorted({r["run_info"]["task"] for r in all_results})
    seeds = sorted({r["run_info"]["seed"] for r in all_results})
    commits = _counts(runs, _commit)
    environments = _counts(runs, _environment)
    return [
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(all_results)} result files "
        f"({len(all_results) - n_failed} finished, {n_failed} failed). Plan "
        f"`{all_results[0]['run_info'].get('plan')}`, profile `{all_results[0]['run_info'].get('profile')}`; tasks "
        f"{', '.join(tasks)}; seeds "
        f"{', '.join(map(str, seeds))}.",
        f"aptune {runs[0]['meta_info']['versions'].get('aptune')} at "
        + (f"commit {next(iter(commits))}" if len(commits) == 1 else f"commits {_with_counts(commits, ', ')}")
        + "; " + (next(iter(environments)) if len(environments) == 1 else _with_counts(environments, "; "))
        + _peer_versions(runs) + ".",
    ]


def _peer_versions(runs: list[dict]) -> str:
    """``; peers by their own code: peft 0.21.2, torch-pruning 1.6.1`` where peers ran (their runs record them)."""
    names = {"peft": "peft", "torch_pruning": "torch-pruning"}
    found = sorted({f"{names[k]} {v}" for r in runs for k, v in ((r.get("train_info") or {}).get("peer") or {}).items()
                    if k in names})
    return f"; peers by their own code: {', '.join(found)}" if found else ""


def _commit(meta: dict) -> str:
    return f"`{meta.get('aptune_git_sha')}`" + (" (with uncommitted changes)" if meta.get("aptune_git_dirty") else "")


def _environment(meta: dict) -> str:
    versions = meta.get("versions", {})
    gpus = meta.get("gpus")
    return (f"torch {versions.get('torch')}, transformers {versions.get('transformers')}, Python {meta.get('python')}, "
            f"{meta.get('cpu')} ({meta.get('cpu_count')} cores), {'GPUs: ' + ', '.join(gpus) if gpus else 'no GPU'}")


def _counts(results: list[dict], describe) -> dict[str, int]:
    """How many runs each value of ``describe(meta_info)`` has, in the runs' order: runs resumed on a later checkout,
    or made on another machine, must not hide behind the first run's."""
    counts: dict[str, int] = {}
    for r in results:
        key = describe(r["meta_info"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def _with_counts(counts: dict[str, int], separator: str) -> str:
    return separator.join(f"{key} ({n} run{'s' if n > 1 else ''})" for key, n in counts.items())
