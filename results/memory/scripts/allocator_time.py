"""Training time under two allocators, paired by seed: ``aptune train`` run folders of the same config and seeds, one
set per allocator, compared run by run (the second set's time as a share of the first's, mean ± 95% t-interval over
seeds), beside each run's peak RSS and final dev metric (which must be equal: an allocator moves no number but
memory and time).

    python results/memory/scripts/allocator_time.py glibc=RUNS/main_glibc_s42,... tcmalloc=RUNS/main_tcmalloc_s42,... \\
        --json results/memory/step_time.json --markdown results/memory/step_time.md

Training time is the run's ``train_time_s`` (every step, evaluation and pruning step); the median step is the median
of the steps timed at each log line (``step_time`` in ``metrics.jsonl``), which leaves evaluations and cuts out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from aptune.ablation.stats import Stat
from aptune.provenance import meta_info

GIB = 2**30


def read_run(folder: Path) -> dict:
    """One run's seed, allocator, times, peak RSS and final dev metric."""
    summary = json.loads((folder / "summary.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    steps = [r["step_time"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
             if "step_time" in r]
    return {"run": str(folder), "seed": config["train"]["seed"],
            "allocator": summary["provenance"].get("allocator"), "train_time_s": summary["train_time_s"],
            "median_step_s": statistics.median(steps), "peak_rss_gib": summary["peak_rss_bytes"] / GIB,
            "dev": summary["final"][summary["primary_metric"]]}


def compare(first: list[dict], second: list[dict]) -> dict:
    """Per seed, the second's time over the first's; mean ± 95% over seeds."""
    by_seed = {r["seed"]: r for r in first}
    pairs = [(by_seed[r["seed"]], r) for r in second if r["seed"] in by_seed]
    if any(a["dev"] != b["dev"] for a, b in pairs):
        raise SystemExit("the dev metric differs between the allocators: these are not the same runs")
    out = {}
    for key in ("train_time_s", "median_step_s", "peak_rss_gib"):
        ratios = [b[key] / a[key] for a, b in pairs]
        stat = Stat.of(ratios)
        out[key] = {"ratios": ratios, "mean": stat.mean, "half_width": stat.half_width}
    return out


def markdown(names: list[str], runs: dict[str, list[dict]], ratios: dict) -> str:
    first, second = names
    lines = [f"| seed | {first} training time, s | {second} training time, s | {first} median step, s | "
             f"{second} median step, s | {first} peak RSS, GiB | {second} peak RSS, GiB | dev (both) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_seed = {r["seed"]: r for r in runs[second]}
    for a in runs[first]:
        b = by_seed[a["seed"]]
        lines.append(f"| {a['seed']} | {a['train_time_s']:.1f} | {b['train_time_s']:.1f} | {a['median_step_s']:.3f} | "
                     f"{b['median_step_s']:.3f} | {a['peak_rss_gib']:.3f} | {b['peak_rss_gib']:.3f} | {a['dev']:.4f} |")
    lines.append("")
    for key, label in (("train_time_s", "training time"), ("median_step_s", "median step"),
                       ("peak_rss_gib", "peak RSS")):
        r = ratios[key]
        spread = f" ± {r['half_width']:.3f}" if r["half_width"] is not None else ""
        lines.append(f"- {label}, {second} / {first}, paired by seed: {r['mean']:.3f}{spread} "
                     f"({', '.join(f'{x:.3f}' for x in r['ratios'])})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs=2, help="NAME=FOLDER,FOLDER,... (the first is the reference)")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    runs = {}
    for spec in args.sets:
        name, folders = spec.split("=", 1)
        runs[name] = [read_run(Path(f)) for f in folders.split(",")]
    names = list(runs)
    ratios = compare(runs[names[0]], runs[names[1]])
    table = markdown(names, runs, ratios)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "ratios": ratios, "provenance": meta_info()}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
