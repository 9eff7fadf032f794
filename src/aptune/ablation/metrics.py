"""The numbers of one run that the ablation report derives from its stored absolute ones.

Result JSONs hold only what a run measured itself; everything relative to another run is computed here, after
the fact (docs/peers.md §4.7), so that a report can be rebuilt when a reference run is added or rerun:

* time-to-accuracy and steps-to-accuracy: the first evaluation whose dev metric reaches a fraction (97%; 95%
  and 100% go to the CSV) of ``full_finetune``'s *best* dev score on the same task and seed (newer runners
  fill in the 97% numbers themselves after the plan, ``train_info.accuracy_target``; those are used then);
* Jaccard overlap of each pruning run's kept blocks with those ``apt`` keeps (same task and seed).

Two inference timings may coexist: ``lat_b*``/``p90_b*``/``thr_b*`` from the run's own processes and
``sbs_*`` from the plan-wide side-by-side timing; the catalogue decides which one the tables show. Likewise
inference memory as RSS (``infmem_b*``) and as weights + activations (``modelmem_b*``), and training memory
as RSS (``train_peak_mem``) and as model bytes (``train_mem``).
"""

from __future__ import annotations

import statistics

from aptune.ablation.results import (dev_scores, find_runs, finished, model_memory_by_batch, prunes,
                                     pruning_accuracy, side_by_side_timings)

TTA_FRACTIONS = (0.95, 0.97, 1.0)
HEADLINE_FRACTION = 0.97


def best_score(result: dict) -> float | None:
    scores = [s for _, _, s in dev_scores(result)]
    return max(scores) if scores else None


def time_to_score(result: dict, target: float) -> tuple[float | None, int | None]:
    """Wall time and step of the first evaluation whose dev metric reaches ``target`` (None, None if never)."""
    for step, wall, score in dev_scores(result):
        if score >= target:
            return wall, step
    return None, None


def kept_blocks(masks: dict) -> dict[str, set]:
    """Kept blocks per kind as hashable ids: heads/ffn ``(site, original index)``, hidden ``index``."""
    return {
        "heads": {(site, i) for site, kept in masks.get("heads", {}).items() for i in kept},
        "ffn": {(site, i) for site, kept in masks.get("ffn", {}).items() for i in kept},
        "hidden": set(masks.get("hidden", [])),
    }


def jaccard(a: set, b: set) -> float | None:
    union = a | b
    return len(a & b) / len(union) if union else None


def mask_overlap(masks: dict, reference: dict) -> dict[str, float | None]:
    """Jaccard overlap of kept blocks, per kind and combined (every block counted once)."""
    mine, theirs = kept_blocks(masks), kept_blocks(reference)
    out = {kind: jaccard(mine[kind], theirs[kind]) for kind in mine}
    tagged = lambda blocks: {(kind, x) for kind, items in blocks.items() for x in items}  # noqa: E731
    out["all"] = jaccard(tagged(mine), tagged(theirs))
    return out


def reference_score(results: list[dict], task: str, seed: int) -> tuple[float | None, str]:
    """full_finetune's best dev score: same seed, else the mean over its seeds; with where it came from."""
    same = [best_score(r) for r in find_runs(results, "full_finetune", task, seed)]
    if same and same[0] is not None:
        return same[0], f"full_finetune seed {seed}"
    others = [b for b in (best_score(r) for r in find_runs(results, "full_finetune", task)) if b is not None]
    if others:
        return statistics.fmean(others), f"full_finetune, mean over {len(others)} seeds"
    return None, "no full_finetune run"


def run_metrics(result: dict, results: list[dict]) -> dict[str, float | None]:
    """Every scalar the report shows for one finished run (absolute, and computed against other runs)."""
    row = _measured(result)
    row.update(_time_to_reference(result, results))
    row.update(_overlap_with_apt(result, results))
    return row


def _measured(result: dict) -> dict[str, float | None]:
    """What the run recorded itself: scores, training cost, and the export's size and timings per batch."""
    train, inf, ev = result["train_info"], result["inference_info"], result["eval_info"]
    row: dict[str, float | None] = {
        "final": ev["final"].get(ev["primary_metric"]), "best_after_pruning": ev["best_after_pruning"],
        "train_time_s": train["train_time_s"], "train_peak_mem": train["peak_rss_bytes"],
        "train_mem": (train.get("memory") or {}).get("total_bytes"),
        "pruning_acc": pruning_accuracy(result),
        "params": inf["params"] if inf else None, "disk": inf["disk_bytes"] if inf else None,
        "density": train["density"],
    }
    return row | _inference(inf)


def _inference(inf: dict | None) -> dict[str, float | None]:
    """Timings and memory per batch size, from every source the result carries (see the module docstring)."""
    row: dict[str, float | None] = {}
    for b, r in (inf or {}).get("by_batch", {}).items():
        row[f"lat_b{b}"], row[f"p90_b{b}"] = r["median_s"], r["p90_s"]
        row[f"thr_b{b}"], row[f"infmem_b{b}"] = r["throughput"], r["peak_memory_bytes"]
    for b, r in side_by_side_timings(inf).items():
        row[f"sbs_lat_b{b}"], row[f"sbs_p90_b{b}"], row[f"sbs_thr_b{b}"] = r["median_s"], r["p90_s"], r["throughput"]
    for b, r in model_memory_by_batch(inf).items():
        row[f"modelmem_b{b}"] = r.get("total_bytes")
    return row


def _time_to_reference(result: dict, results: list[dict]) -> dict[str, float | None]:
    """Wall time and steps until each fraction of full_finetune's best score (None where never reached)."""
    info = result["run_info"]
    ref, _ = reference_score(results, info["task"], info["seed"])
    row: dict[str, float | None] = {}
    for fraction in TTA_FRACTIONS:
        wall, step = time_to_score(result, fraction * ref) if ref is not None else (None, None)
        pct = int(round(fraction * 100))
        row[f"tta{pct}_s"], row[f"steps{pct}"] = wall, step
    train = result["train_info"]
    if train.get("accuracy_target") is not None:
        # the runner measured the headline fraction itself; its None then means "never reached", not "unknown"
        pct = int(round(HEADLINE_FRACTION * 100))
        row[f"tta{pct}_s"], row[f"steps{pct}"] = train.get("time_to_accuracy"), train.get("steps_to_accuracy")
    return row


def _overlap_with_apt(result: dict, results: list[dict]) -> dict[str, float | None]:
    """Jaccard of the kept blocks with apt's on the same task and seed (None for runs that do not prune)."""
    info, train = result["run_info"], result["train_info"]
    apt = find_runs(finished(results), "apt", info["task"], info["seed"])
    overlap = (mask_overlap(train["masks"], apt[0]["train_info"]["masks"])
               if apt and prunes(result) and train.get("masks") and apt[0]["train_info"].get("masks") else {})
    return {f"jaccard_{kind}": overlap.get(kind) for kind in ("all", "heads", "ffn", "hidden")}
