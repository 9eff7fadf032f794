"""``aptune report RUNS_DIR [--out DIR]``: tables, plots and readings from an ablation's result JSONs.

Writes ``report.md`` (protocol, one table and one generated reading per ablation), PNG plots (convergence
with pruning and rank-growth events, accuracy vs inference time and memory, kept heads and neurons per layer,
adapter ranks over training) and ``runs.csv`` (every computed number per run) into ``--out``
(default ``RUNS_DIR/report``). Runs evaluated downstream (a plan with ``evaluation``, such as
``configs/smollm2/compare.yaml``) get the comparison report instead (``aptune.ablation.compare_report``).
"""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "write report.md, plots and runs.csv from the result JSONs of `aptune ablate`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", help="the --runs-dir of `aptune ablate` (holding results/*.json)")
    parser.add_argument("--out", default=None, help="output folder (default: RUNS_DIR/report)")


def run(args: argparse.Namespace) -> int:
    from aptune.ablation.compare_report import is_comparison, write_comparison_report
    from aptune.ablation.report import load_results, write_report

    comparison = is_comparison(load_results(args.runs_dir))
    path = (write_comparison_report if comparison else write_report)(args.runs_dir, args.out)
    print(f"report: {path}")
    for png in sorted(path.parent.glob("*.png")):
        print(f"plot:   {png}")
    return 0
