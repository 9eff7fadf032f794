"""The memory breakdown each run of an ``aptune ablate`` runs folder recorded (``train_info.memory_breakdown``), as a
Markdown table: per run, at its highest RSS and at its most heap in use, the tensors by holder, the heap in use, the
heap the allocator holds free, other anonymous memory and mapped files (MiB), beside the run's peak RSS
(``ru_maxrss``) and the counted peak step.

    python results/memory/scripts/breakdown_table.py RUNS_DIR [--seeds 42] > table.md

A breakdown written before commit c1afedf has no ``tensors_in_mapped_files``: the weights still in the checkpoint's
mmap are then counted among the tensors but lie in the mapped files, so "heap in use, not tensors" is shown as n/a.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MiB = 2**20
HOLDERS = ("parameters", "gradients", "optimizer", "teacher", "salience", "activations")


def mib(n) -> str:
    return "n/a" if n is None else f"{n / MiB:,.0f}"


def row(name: str, where: str, reading: dict) -> str:
    tensors = reading["tensors"]
    mapped = reading.get("tensors_in_mapped_files")
    other = reading["other_heap_in_use"] if mapped is not None else None
    return (f"| `{name}` | {where}: step {reading['step']} ({reading['where']}) | {mib(reading['rss'])} | "
            + " | ".join(mib(tensors.get(h)) for h in HOLDERS)
            + f" | {mib(mapped)} | {mib(other)} | {mib(reading['heap_free_held'])} | "
              f"{mib(reading['other_anonymous'])} | {mib(reading['mapped_files'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds to show")
    args = parser.parse_args()
    seeds = {int(s) for s in args.seeds.split(",")}
    print("| run | sample | RSS | " + " | ".join(HOLDERS) + " | of the tensors, mapped from the checkpoint | "
          "heap in use, not tensors | free heap held | other anonymous | mapped files |")
    print("|---|---|" + "---:|" * (len(HOLDERS) + 6))
    for path in sorted(Path(args.runs_dir, "results").glob("*.json")):
        result = json.loads(path.read_text())
        info = result["run_info"]
        breakdown = (result.get("train_info") or {}).get("memory_breakdown")
        if info["seed"] not in seeds or not breakdown:
            continue
        name = f"{info['variant']} s{info['seed']}"
        print(row(name, "highest RSS", breakdown["peak"]))
        print(row(name, "most heap in use", breakdown["busiest"]))


if __name__ == "__main__":
    main()
