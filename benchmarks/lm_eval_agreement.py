"""lm-evaluation-harness against aptune's own multiple-choice scorer, item by item, on real models (issue 13).

Each model (a short name, a model folder or an export) scores the same seeded subset of a multiple-choice task
twice, zero-shot: with ``aptune.eval.mc`` and with lm-eval through a local task file that holds aptune's items
(``aptune.eval.lm_eval_bridge``; no network). The table gives both harnesses' acc / acc_norm, the items whose
decision differs, and the largest difference in a choice's log-likelihood.

    python benchmarks/lm_eval_agreement.py base=smollm2-135m apt=runs/smollm2-alpaca-fp32/export \\
        --task arc_easy --max-samples 300 --json results/llama/lm_eval_agreement.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from aptune.data.multiple_choice import load_mc_task
from aptune.data.splits import subsample
from aptune.eval.lm_eval_bridge import run_lm_eval_on_items
from aptune.eval.mc import evaluate_multiple_choice
from aptune.models import load_model, load_tokenizer
from aptune.provenance import meta_info


def compare(name: str, source: str, items: list, workdir: Path, batch_size: int) -> dict:
    """Both harnesses on one model; per-item agreement."""
    model = load_model(source, head="causal-lm").eval()
    tokenizer = load_tokenizer(source)
    started = time.perf_counter()
    ours = evaluate_multiple_choice(model, tokenizer, items, batch_size=batch_size, progress=False, return_details=True)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = run_lm_eval_on_items(model, tokenizer, items, f"agreement_{name}", workdir / name, batch_size=batch_size)
    theirs_s = time.perf_counter() - started
    differ_acc = differ_norm = 0
    worst = 0.0
    for item, mine, judged in zip(items, ours["details"], theirs["details"]):
        differ_acc += judged["acc"] != float(mine["prediction"] == item.answer)
        differ_norm += judged["acc_norm"] != float(mine["prediction_norm"] == item.answer)
        worst = max(worst, max(abs(a - b) for a, b in zip(judged["loglikelihoods"], mine["loglikelihoods"])))
    return {"model": name, "source": source, "n": len(items), "aptune_acc": ours["acc"],
            "aptune_acc_norm": ours["acc_norm"], "lm_eval_acc": theirs["acc"], "lm_eval_acc_norm": theirs["acc_norm"],
            "items_differ_acc": differ_acc, "items_differ_acc_norm": differ_norm, "max_abs_loglik_diff": worst,
            "aptune_s": ours_s, "lm_eval_s": theirs_s}


def render(task: str, rows: list[dict]) -> str:
    lines = [f"| model ({task}, {rows[0]['n']} items, 0-shot) | aptune acc / acc_norm | lm-eval acc / acc_norm | "
             "items that differ (acc / acc_norm) | max abs log-likelihood difference |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['aptune_acc']:.3f} / {r['aptune_acc_norm']:.3f} | {r['lm_eval_acc']:.3f} / "
                     f"{r['lm_eval_acc_norm']:.3f} | {r['items_differ_acc']} / {r['items_differ_acc_norm']} | "
                     f"{r['max_abs_loglik_diff']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL", help="a label and a short name, folder or export")
    parser.add_argument("--task", default="arc_easy", help="arc_easy, arc_challenge or sciq (default arc_easy)")
    parser.add_argument("--split", help="default: ARC dev, SciQ test")
    parser.add_argument("--max-samples", type=int, default=300, help="a seeded subset of this many items")
    parser.add_argument("--seed", type=int, default=1234, help="the subset's seed (aptune eval's default)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = [spec.split("=", 1) for spec in args.models]
    if any(len(pair) != 2 or not all(pair) for pair in pairs):
        parser.error("give every model as NAME=MODEL, e.g. base=smollm2-135m")
    dataset = load_mc_task(args.task, args.split)
    items = subsample(dataset.items, args.max_samples, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [compare(name, source, items, Path(scratch), args.batch_size) for name, source in pairs]
    print(render(args.task, rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"task": args.task, "split": dataset.split, "seed": args.seed, "rows": rows,
                                         "command": "python benchmarks/lm_eval_agreement.py " +
                                         " ".join(f"{n}={s}" for n, s in pairs) +
                                         f" --task {args.task} --max-samples {args.max_samples}",
                                         "meta_info": meta_info()}, indent=1))


if __name__ == "__main__":
    main()
