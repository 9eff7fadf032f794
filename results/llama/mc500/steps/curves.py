"""Held-out loss at every evaluation of the tuning-budget runs (README.md), finished or not, as a markdown table.

    python results/llama/mc500/steps/curves.py > results/llama/mc500/steps/curves.md

Finished runs come from their result JSONs (results/, train_info.curve); the GPU runs that the device's time
window cut off, from their training logs (gpu_partial/*.metrics.jsonl); the 200-step CPU runs of
apt_recovery_refit and lora, from ../results/.
"""

import json
from pathlib import Path

from aptune.ablation.results import dev_scores
from aptune.data.files import iter_jsonl

HERE = Path(__file__).resolve().parent


def _finished(path: Path) -> tuple[str, str, dict[int, float]]:
    data = json.loads(path.read_text())
    name = path.stem.replace("__alpaca__seed", " seed ")
    device = "GPU" if data["meta_info"].get("gpus") else "CPU"
    return name, device, {step: loss for step, _, loss in dev_scores(data)}


def _partial(path: Path) -> tuple[str, str, dict[int, float]]:
    run, seed = path.name.removesuffix(".metrics.jsonl").rsplit("_", 1)
    events = (event for _, event in iter_jsonl(path))
    return f"{run} seed {seed} (cut off)", "GPU", {e["step"]: e["eval_loss"] for e in events if e.get("event") == "eval"}


def main() -> None:
    rows = [_finished(p) for p in sorted((HERE / "results").glob("*.json"))]
    rows += [_partial(p) for p in sorted((HERE / "gpu_partial").glob("*.metrics.jsonl"))]
    rows += [_finished(p) for p in sorted((HERE.parent / "results").glob("*.json"))
             if p.name.startswith(("lora__", "apt_recovery_refit__"))]
    steps = sorted({step for _, _, curve in rows for step in curve})
    print("| run | device | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|---|" + "---:|" * len(steps))
    for name, device, curve in rows:
        cells = (f"{curve[s]:.3f}" if s in curve else "" for s in steps)
        print(f"| {name} | {device} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
