"""``aptune ablate PLAN [--profile quick] [--runs-dir DIR] [--only name,...] [--seeds 42,43]``: run an ablation plan.

Every run (variant × task × seed) trains in its own process and its exported model is timed in others;
one result JSON per run lands in ``RUNS_DIR/results``. When the command is run again, finished runs whose
overrides are unchanged are skipped (delete ``results/<run>.json`` to redo one, e.g. after editing the base
config), failed ones are retried. ``aptune report RUNS_DIR`` turns the results into tables and plots.
``--dry-run`` lists the runs and checks their configs; ``--save-configs DIR`` also keeps each run's config, the
file the runner hands to ``aptune train --config``, to run one by hand with settings of your own.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

NAME = "ablate"
HELP = "run an ablation plan (variants x tasks x seeds), one process and one result JSON per run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", help="plan YAML (e.g. configs/ablations/apt_plan.yaml)")
    parser.add_argument("--profile", default=None, help="profile of the plan (default: the plan's default_profile)")
    parser.add_argument("--runs-dir", default=None,
                        help="where runs and results go (default: runs/ablations/<plan>-<profile>)")
    parser.add_argument("--only", default=None, help="comma-separated run names to do (default: all)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds to run instead of the profile's (e.g. 42,43,44)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their overrides, run nothing")
    parser.add_argument("--save-configs", default=None, metavar="DIR",
                        help="a dry run that also keeps each run's config as DIR/<run>.yaml, the file the runner "
                             "gives `aptune train --config` (to run one by hand, with settings of your own)")


def run(args: argparse.Namespace) -> int:
    from aptune.ablation.plan import load_plan
    from aptune.ablation.runner import run_plan

    plan = load_plan(args.plan, args.profile)
    if args.seeds:
        plan = dataclasses.replace(plan, seeds=_seeds(args.seeds))
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    runs_dir = Path(args.runs_dir or Path("runs") / "ablations" / f"{plan.name}-{plan.profile}")
    specs = plan.expand(only)
    variants = len(only) if only else len(plan.variants)
    print(f"plan {plan.path} (profile {plan.profile}): {len(specs)} runs = {variants} variants x {len(plan.tasks)} "
          f"tasks x {len(plan.seeds)} seeds -> {runs_dir}")
    if args.dry_run or args.save_configs:
        return _dry_run(plan, specs, runs_dir, Path(args.save_configs) if args.save_configs else None)
    results = run_plan(plan, runs_dir, only)
    failed = [r["run_info"]["name"] for r in results if r["run_info"]["status"] != "ok"]
    if failed:
        print(f"failed runs (see their result JSON and run logs): {', '.join(failed)}")
    print(f"report: aptune report {runs_dir}")
    return 1 if failed else 0


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(word) for word in text.split(",") if word.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers (e.g. 42,43,44), got {text!r}") from None
    if not seeds:
        raise ValueError(f"--seeds names no seed: {text!r}; give e.g. 42,43,44")
    return seeds


def _dry_run(plan, specs, runs_dir: Path, keep: Path | None = None) -> int:
    """Print every run's overrides and check that its config loads (what `aptune train` would read first); with
    ``keep``, the configs stay there as ``<run id>.yaml``.

    A run that builds on an earlier one (init_from, teacher_from) is shown with that run's export in ``runs_dir``,
    where the runner will look for it."""
    import tempfile

    import yaml

    from aptune.ablation.runner import run_yaml_text, with_earlier_exports
    from aptune.config import load_config

    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            spec.overrides = with_earlier_exports(spec, runs_dir)
            path = folder / f"{spec.run_id}.yaml"
            path.write_text(run_yaml_text(plan, spec))
            try:
                load_config(path)
                verdict = "config ok"
            except (ValueError, FileNotFoundError) as err:
                verdict, bad = f"config INVALID: {err}", bad + 1
            overrides = yaml.safe_dump(spec.overrides, sort_keys=False, default_flow_style=None).rstrip()
            print(f"- {spec.run_id} ({verdict})\n    " + overrides.replace("\n", "\n    "))
    if keep and specs:
        print(f"configs: {keep}/<run>.yaml; run one with aptune train --config {keep}/{specs[0].run_id}.yaml "
              f"output_dir=...")
    return 1 if bad else 0
