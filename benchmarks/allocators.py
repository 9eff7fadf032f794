"""Which allocator a training run should use: peak RSS and step time of the main recipe's runs under each choice.

    python benchmarks/allocators.py --out $RW/allocators --json results/memory/allocators.json \\
        --markdown results/memory/allocators.md

Each cell is one ``python -m aptune train`` process of a packaged config (the main recipe and its references),
run one after another, never two at once, with ``APTUNE_ALLOCATOR`` and the variables of its setting in its
environment. Read back: the peak RSS (``summary.json``, ``ru_maxrss``), the training time, the median logged
step time, the counted peak step (tensors only, ``aptune.bench.memory``), the dev metric, and the allocator the
run recorded itself as running under (``provenance``). A setting whose library is missing is left out, and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from aptune import allocator
from aptune.provenance import meta_info

GIB, MIB = 2**30, 2**20

# allocator settings: the choice aptune makes, plus what the environment adds
SETTINGS = {
    "glibc": ("glibc", {}),
    # glibc told to return freed memory: at most two arenas, the heap trimmed whenever its top is free
    "glibc_tuned": ("glibc", {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "0"}),
    "jemalloc": ("jemalloc", {}),
    # PyTorch's CPU launcher (torch.backends.xeon.run_cpu --enable-jemalloc) sets this MALLOC_CONF
    "jemalloc_torch": ("jemalloc", {"MALLOC_CONF": "oversize_threshold:1,background_thread:true,metadata_thp:auto"}),
    "tcmalloc": ("tcmalloc", {}),
}
# runs: a name, a packaged config, its overrides
RUNS = {
    "apt": ("minilm/sst2", []),
    "apt_distill": ("minilm/sst2", ["distill.enabled=true"]),
    "lora": ("minilm/sst2_lora", []),
    "full_finetune": ("minilm/sst2_full_finetune", []),
}


def measure(run: str, setting: str, out: Path, threads: int, seed: int) -> dict:
    config, overrides = RUNS[run]
    choice, extra = SETTINGS[setting]
    folder = out / f"{run}__{setting}__seed{seed}"
    env = {key: value for key, value in os.environ.items()
           if key not in ("LD_PRELOAD", "MALLOC_CONF", "APTUNE_ALLOCATOR_SET", *SETTINGS["glibc_tuned"][1])}
    env.update(extra, APTUNE_ALLOCATOR=choice)
    command = [sys.executable, "-m", "aptune", "train", "--no-latency", "--config", config, *overrides,
               f"output_dir={folder}", f"train.threads={threads}", f"train.seed={seed}", "train.overwrite=true"]
    with (out / f"{folder.name}.log").open("w") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    step_times = [r["step_time"] for r in records if "step_time" in r]
    return {
        "run": run, "setting": setting, "seed": seed, "environment": extra,
        "recorded_allocator": summary["provenance"]["allocator"],
        "peak_rss_bytes": summary["peak_rss_bytes"], "counted_bytes": summary["memory"]["total_bytes"],
        "train_time_s": summary["train_time_s"], "median_step_s": statistics.median(step_times),
        "metric": summary["primary_metric"], "final": summary["final"][summary["primary_metric"]],
        "density": summary["density"], "command": " ".join(command[1:]),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| run | allocator setting | peak RSS, GiB | counted peak step, MiB | training time, min | "
             "median step, s | dev | density |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['run']}` | {r['setting']} | {r['peak_rss_bytes'] / GIB:.2f} | "
                     f"{r['counted_bytes'] / MIB:.1f} | {r['train_time_s'] / 60:.1f} | {r['median_step_s']:.3f} | "
                     f"{r['final']:.4f} | {r['density']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a scratch folder for the run folders and logs")
    parser.add_argument("--cells", default="apt:glibc,glibc_tuned,jemalloc,jemalloc_torch,tcmalloc;"
                                           "apt_distill:glibc,jemalloc;lora:glibc,jemalloc;full_finetune:glibc,jemalloc",
                        help="RUN:SETTING,SETTING;... in the order they run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", required=True)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, missing = [], []
    for cell in args.cells.split(";"):
        run, settings = cell.split(":")
        for setting in settings.split(","):
            choice = SETTINGS[setting][0]
            if choice != "glibc" and allocator.find_library(choice) is None:
                missing.append(setting)
                continue
            print(f"{run} under {setting} ...", flush=True)
            rows.append(measure(run, setting, args.out, args.threads, args.seed))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    Path(args.json).write_text(json.dumps({"meta": meta_info(), "missing": sorted(set(missing)), "rows": rows},
                                          indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows))
    print(markdown(rows) + (f"not installed: {', '.join(sorted(set(missing)))}\n" if missing else ""))


if __name__ == "__main__":
    main()
