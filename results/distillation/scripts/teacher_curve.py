"""The teacher's own dev accuracy beside the student's, over the run, from the result JSONs of ``aptune ablate``
runs folders (each holding ``results/*.json``): every evaluation of the student (line) and every teacher as it was
taken or renewed (markers, ``teacher_eval`` events), one panel per variant that distils, one colour per seed.

    python results/distillation/scripts/teacher_curve.py RUNS_DIR [RUNS_DIR ...] \\
        --variants apt,official_arms_distill --out results/distillation/arms/teacher_curve.png

It also prints, per run, each renewal's teacher score against the student's score that made it the teacher.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dirs", nargs="+")
    parser.add_argument("--variants", required=True, help="comma-separated variants that distil")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    variants = args.variants.split(",")
    results = [json.loads(p.read_text()) for d in args.runs_dirs for p in sorted(Path(d, "results").glob("*.json"))]
    fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4), sharey=True, squeeze=False)
    for axis, variant in zip(axes[0], variants):
        runs = sorted((r for r in results if r["run_info"]["variant"] == variant and r.get("train_info")),
                      key=lambda r: r["run_info"]["seed"])
        for colour, result in zip(("C0", "C1", "C2", "C3", "C4"), runs):
            seed, info = result["run_info"]["seed"], result["train_info"]
            metric = result["eval_info"]["primary_metric"]
            curve = [(h["step"], h[metric]) for h in info["curve"]]
            teachers = [e for e in info["events"] if e.get("event") == "teacher_eval"]
            axis.plot(*zip(*curve), color=colour, label=f"student, seed {seed}")
            axis.plot([t["step"] for t in teachers], [t[metric] for t in teachers], "^", color=colour,
                      label=f"teacher, seed {seed}")
            for t in teachers:
                student = "first" if t["student"] is None else f"student {t['student']:.4f}"
                print(f"{variant} seed {seed} step {t['step']}: teacher {t[metric]:.4f} ({student})")
        axis.set_title(variant)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("dev accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
