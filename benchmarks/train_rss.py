"""What the peak RSS of a decoder training run measures (issue 13: "the pruned model's training peak memory below
lora's; say what sets it"): the process's peak RSS beside the tensors of its peak step, counted.

    python benchmarks/train_rss.py --json results/llama/recovery/train_rss.json \\
        --markdown results/llama/recovery/train_rss.md

Each run is one ``python -m aptune train`` process of ``--steps`` steps, one after another, with the run's
settings from ``configs/smollm2/compare.yaml`` (profile mc500, seed 42) and ``train.log_every=1``, so that
``metrics.jsonl`` has the process's peak RSS (``ru_maxrss``) after every step. Read from it: the peak after the
cut and the evaluation before tuning (step 1's record, for a cut before tuning), the peak after the last step,
and the median step time; from ``summary.json`` the counted peak step (parameters, gradients, AdamW
moments and the activations autograd saves, ``aptune.bench.memory``). What the peak RSS adds to the counted
bytes is the interpreter, the libraries and glibc's heap: a freed tensor above glibc's (moving) mmap threshold
stays in the heap for reuse and counts in RSS until the heap is trimmed, and the cut leaves every layer its own
widths, so tensors of many sizes leave holes that later requests do not fit.

A run that starts from an earlier run's export (``init_from``, e.g. ``lora_prune``) takes it from ``--runs-dir``,
an ``aptune ablate`` folder where that run has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from aptune.ablation.plan import load_plan
from aptune.ablation.runner import earlier_exports, with_earlier_exports
from aptune.provenance import meta_info

PLAN, PROFILE, SEED = "configs/smollm2/compare.yaml", "mc500", 42
MIB = 2**20


def run_config(plan, name: str, runs_dir: Path | None = None) -> dict:
    """The run's config file at seed 42, as ``aptune ablate`` writes it. A run that builds on an earlier run's export
    (``init_from``) takes that export from ``runs_dir``, an ``aptune ablate`` folder where the earlier run has
    finished."""
    try:
        specs = plan.expand([name], flag="--runs")
    except ValueError as err:
        raise SystemExit(f"{PLAN}: {err}") from None
    spec = next((s for s in specs if s.seed == SEED), None)
    if spec is None:
        raise SystemExit(f"no run {name!r} at seed {SEED} in {PLAN} (profile {PROFILE})")
    exports = earlier_exports(spec, runs_dir or Path("RUNS_DIR"))  # the runner's rule: where each export lies
    if exports:
        runs = ", ".join(f"{export.parent.parent.name} ({setting})" for setting, export in exports.items())
        if runs_dir is None:
            raise SystemExit(f"{name} builds on the export of {runs}; give --runs-dir, the aptune ablate folder "
                             f"where that run has finished")
        missing = [str(export) for export in exports.values() if not export.is_dir()]
        if missing:
            raise SystemExit(f"{name} builds on {runs}: no export at {', '.join(missing)}; run it first with "
                             f"aptune ablate {PLAN} --profile {PROFILE} --runs-dir {runs_dir}")
        spec.overrides = with_earlier_exports(spec, runs_dir)
    return plan.run_config(spec)


def measure(name: str, run_yaml: dict, steps: int, folder: Path) -> dict:
    out = folder / name
    config = out / "run.yaml"
    out.mkdir(parents=True)
    config.write_text(yaml.safe_dump(run_yaml, sort_keys=False))
    command = [sys.executable, "-m", "aptune", "train", "--no-latency", "--config", str(config),
               f"output_dir={out / 'train'}", f"train.steps={steps}", f"train.eval_every={steps}",
               "train.log_every=1"]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="2")
    with (out / "train.log").open("w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    step_records = [r for r in records if "peak_rss" in r]
    summary = json.loads((out / "train" / "summary.json").read_text())
    counted = summary["memory"]
    return {
        "run": name, "steps": steps,
        "peak_rss_after_step_1": step_records[0]["peak_rss"],
        "peak_rss_after_training": step_records[-1]["peak_rss"],
        "peak_rss_process": summary["peak_rss_bytes"],
        "median_step_s": statistics.median(r["step_time"] for r in step_records[1:]),
        "counted_step_bytes": sum(counted[k] for k in ("params_bytes", "grads_bytes", "optimizer_bytes",
                                                       "activations_bytes")),
        "final": summary["final"],
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| run | peak RSS after step 1 | peak RSS after training | counted peak step | median step "
             "| dev loss, last step |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['run']}` | {r['peak_rss_after_step_1'] / MIB:,.0f} MiB "
                     f"| **{r['peak_rss_after_training'] / MIB:,.0f} MiB** | {r['counted_step_bytes'] / MIB:,.0f} MiB "
                     f"| {r['median_step_s']:.2f} s | {r['final']['eval_loss']!r} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="apt_recovery_wordnet,lora", help="runs of the plan, comma-separated")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--runs-dir", type=Path, help="aptune ablate folder with the exports that runs built on "
                        "earlier runs (init_from) start from")
    parser.add_argument("--json", required=True)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    plan = load_plan(PLAN, PROFILE)
    # an unknown name, or a missing earlier export, fails before any run
    configs = {name: run_config(plan, name, args.runs_dir) for name in args.runs.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, run_yaml in configs.items():
            rows.append(measure(name, run_yaml, args.steps, Path(tmp)))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    Path(args.json).write_text(json.dumps({"meta_info": meta_info(), "rows": rows}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows))


if __name__ == "__main__":
    main()
