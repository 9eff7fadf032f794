"""Reading an ablation's result JSONs: loading, picking runs out, and saying where the numbers come from.

The runner writes one JSON per run (``run_info``, ``train_info``, ``inference_info``, ``eval_info``,
``meta_info``). Both reports (``report``, ``compare_report``) start here, so the few ways of selecting runs
live in one place and every other module of the report can stay free of file handling.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path


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


def prunes(result: dict) -> bool:
    """Whether the run pruned: runs that did not have no kept-block overlap or pruning accuracy to show."""
    config = result["run_info"].get("config") or {}
    return bool((config.get("prune") or {}).get("enabled"))


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


# ------------------------------------------------------------------------------------------ provenance
def provenance(all_results: list[dict], n_failed: int) -> list[str]:
    """Two lines saying where a report's numbers come from: plan, runs, commit, versions, machine."""
    meta = next(iter(finished(all_results)), all_results[0])["meta_info"]
    tasks = sorted({r["run_info"]["task"] for r in all_results})
    seeds = sorted({r["run_info"]["seed"] for r in all_results})
    return [
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(all_results)} result files "
        f"({len(all_results) - n_failed} finished, {n_failed} failed). Plan "
        f"`{all_results[0]['run_info'].get('plan')}`, profile `{all_results[0]['run_info'].get('profile')}`; tasks "
        f"{', '.join(tasks)}; seeds "
        f"{', '.join(map(str, seeds))}.",
        f"aptune {meta['versions'].get('aptune')} at commit `{meta.get('aptune_git_sha')}`"
        f"{' (with uncommitted changes)' if meta.get('aptune_git_dirty') else ''}; torch "
        f"{meta['versions'].get('torch')}, transformers {meta['versions'].get('transformers')}, Python "
        f"{meta.get('python')}; {meta.get('cpu')} ({meta.get('cpu_count')} cores)"
        f"{'; GPUs: ' + ', '.join(meta['gpus']) if meta.get('gpus') else '; no GPU'}.",
    ]
