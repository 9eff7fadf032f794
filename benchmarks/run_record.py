"""A finished ``aptune train`` run folder, condensed into one JSON small enough to commit (a few kB instead of the
folder's export and masks), so that a result stays comparable after the folder is gone:
``benchmarks/paired_runs.py`` reads these records like run folders. The run's ``aptune eval`` record, when the
folder has one, is copied beside it as ``NAME.mc.json``.

    python benchmarks/run_record.py runs/rec/nodown-s43 --name apt_recovery_no_down \\
        --command "aptune train ... # commit abc1234, 2 threads" \\
        --out results/llama/recovery/no_down/no_down-s43.json

Kept: the command, the run's provenance, its primary metric at the end and at every evaluation, the values
after the last pruning step, the training time, peak RSS and counted memory, the parameter count, the pruning
steps (without their per-module ranks and widths) and the schedule, and the run's config.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

SUMMARY_KEYS = ("primary_metric", "final", "best_after_pruning", "pruning_accuracy", "train_time_s",
                "peak_rss_bytes", "memory", "params", "original_params", "density")
PRUNE_STEP_KEYS = ("step", "k", "removed", "params", "density")


def pruning_steps(metrics_file: Path) -> list[dict]:
    if not metrics_file.is_file():
        return []
    events = (json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip())
    return [{k: e[k] for k in PRUNE_STEP_KEYS if k in e} for e in events if e.get("event") == "prune"]


def condense(run: Path, name: str, command: str) -> dict:
    """The record of a finished run folder (``summary.json`` and ``config.yaml`` are required)."""
    missing = [f for f in ("summary.json", "config.yaml") if not (run / f).is_file()]
    if missing:
        raise SystemExit(f"{run}: no {' or '.join(missing)}; give the folder of a finished aptune train run")
    summary = json.loads((run / "summary.json").read_text())
    record = {"run": name, "command": command, "provenance": summary.get("provenance")}
    record.update({k: summary[k] for k in SUMMARY_KEYS if k in summary})
    record["evals"] = summary["history"]
    record["pruning_steps"] = pruning_steps(run / "metrics.jsonl")
    if (run / "schedule.json").is_file():
        record["schedule"] = json.loads((run / "schedule.json").read_text())
    record["config"] = yaml.safe_load((run / "config.yaml").read_text())
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished aptune train run folder")
    parser.add_argument("--name", required=True, help="the run's name in results (e.g. the compare.yaml run)")
    parser.add_argument("--command", required=True, help="the command that made the run, with its commit")
    parser.add_argument("--mc", default="mc.json", help="aptune eval record inside the run folder, if any")
    parser.add_argument("--out", type=Path, required=True, help="the record to write (NAME.json)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        raise SystemExit(f"--out {args.out}: give a .json path (the eval record goes beside it as .mc.json)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(condense(args.run, args.name, args.command), indent=1) + "\n")
    if (args.run / args.mc).is_file():
        shutil.copyfile(args.run / args.mc, args.out.with_suffix(".mc.json"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
