"""``aptune eval``: evaluate a model on a GLUE task, a multiple-choice task or file, or lm-eval tasks.

Examples::

    aptune eval --model smollm2-135m --mc-file items.jsonl
    aptune eval --model smollm2-135m --task arc-easy --split dev
    aptune eval --model smollm2-135m --task mmlu --scoring both --subjects anatomy,astronomy
    aptune eval --model smollm2-135m --task arc-easy,sciq,mmlu --scoring both   # one JSON for all
    aptune eval --model runs/sst2/export --task sst2
    aptune eval --model runs/alpaca/export --lm-eval arc_easy,hellaswag
    aptune eval --model runs/alpaca/export --task arc-easy --prompts prompts.txt   # plus greedy answers

Multiple-choice results print as ``acc=... acc_norm=...`` (see :mod:`aptune.eval.mc` for the
definitions), GLUE results with the task's metrics; all are also written as JSON (``--output``,
default ``runs/eval/<model>/<task>.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

NAME = "eval"
HELP = "evaluate a model on a GLUE task, a multiple-choice task or file (acc / acc_norm), or lm-eval tasks"

MC_TASK_NAMES = ("arc-easy", "arc-challenge", "sciq", "mmlu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="short name (smollm2-135m, minilm), an aptune export or HF model folder, or a hub id")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--task", help=f"a GLUE task (sst2, cola, mrpc, rte, stsb, qnli, mnli, qqp), or one or "
                                       f"more comma-separated multiple-choice tasks ({', '.join(MC_TASK_NAMES)})")
    target.add_argument("--mc-file", type=Path,
                        help='JSONL file, one {"question": str, "choices": [str, ...], "answer": int} per line')
    target.add_argument("--lm-eval", metavar="TASKS",
                        help="comma-separated lm-evaluation-harness tasks (needs lm-eval)")
    parser.add_argument("--prompts", type=Path,
                        help="text file of instructions (one per line): write the model's greedy answers too")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="--prompts: longest answer in tokens")
    parser.add_argument("--split", help="data split (ARC: train/dev/test, default dev; SciQ: valid/test, default "
                                        "test; MMLU: dev/val/test, default val; GLUE: the dev set)")
    parser.add_argument("--data-dir", type=Path,
                        help="data folder to read, and nothing else (it must hold the split evaluated); default: "
                             "$APTUNE_DATA, then ../shared/data beside the checkout, then the hub")
    parser.add_argument("--num-fewshot", type=int, default=0, help="solved examples before each question (default 0)")
    parser.add_argument("--batch-size", type=int, default=8, help="questions (or GLUE examples) per forward pass")
    parser.add_argument("--max-samples", type=int, help="evaluate a seeded random subset of this many items")
    parser.add_argument("--subjects", help="MMLU: comma-separated subjects (default: all 57)")
    parser.add_argument("--scoring", choices=("options", "letters", "both"), default="options",
                        help="MMLU: score the option texts (default), the answer letters, or both")
    parser.add_argument("--include-support", action="store_true", help="SciQ: put the support passage in the prompt")
    parser.add_argument("--max-length", type=int, help="longest sequence in tokens (GLUE default 128)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of few-shot draws and --max-samples subsets")
    parser.add_argument("--output", type=Path, help="JSON file for the results (default runs/eval/<model>/<task>.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "model"


def _load(args, head: str):
    import torch

    from aptune.models import check_max_length, load_model, load_tokenizer, resolve_device

    # one invocation may need the same model twice (multiple choice, then --prompts): load it once
    loaded = vars(args).setdefault("_loaded", {})
    if head not in loaded:
        tokenizer = load_tokenizer(args.model)
        model = load_model(args.model, head=head, dtype=getattr(torch, args.dtype))
        if args.max_length:
            check_max_length(model.config, args.max_length, "--max-length")
        _warn_if_untrained(args, model)
        loaded[head] = model.to(resolve_device(args.device)), tokenizer
    return loaded[head]


def _warn_if_untrained(args, model) -> None:
    """Say first, before any score, that a head the files did not hold is random (its scores mean nothing)."""
    from aptune.models import untrained_head

    names = untrained_head(model)
    if not names:
        return
    which = ", ".join(f"`{name}`" for name in names)
    warning = (f"warning: the task head {which} was never trained: it is randomly initialised, so the scores are "
               f"chance-level; evaluate a fine-tuned model or an aptune export")
    print(warning, flush=True)
    vars(args).setdefault("_warnings", []).append(warning)


def _task_names(task: str) -> list[str]:
    return [name.strip().lower().replace("_", "-") for name in task.split(",") if name.strip()]


def _mc_datasets(args) -> list:
    from aptune.data.multiple_choice import load_mc_jsonl, load_mc_task

    if args.mc_file is not None:
        return [load_mc_jsonl(args.mc_file)]
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
    datasets = []
    for name in _task_names(args.task):
        scorings = ("options", "letters") if args.scoring == "both" else (args.scoring,)
        for scoring in scorings if name == "mmlu" else ("options",):
            datasets.append(load_mc_task(name, args.split, args.data_dir, subjects=subjects, scoring=scoring,
                                         include_support=args.include_support, num_fewshot=args.num_fewshot))
    return datasets


def _run_multiple_choice(args) -> list[dict[str, Any]]:
    from aptune.data.splits import subsample
    from aptune.eval.mc import evaluate_multiple_choice

    datasets = _mc_datasets(args)
    model, tokenizer = _load(args, "causal-lm")
    results = []
    for dataset in datasets:
        items = subsample(dataset.items, args.max_samples, args.seed)
        print(f"data: {dataset.name} from {dataset.source.describe()}")
        started = time.perf_counter()
        result = evaluate_multiple_choice(
            model, tokenizer, items, batch_size=args.batch_size, num_fewshot=args.num_fewshot,
            progress=not args.no_progress, fewshot_pool=dataset.fewshot_pool, seed=args.seed,
            max_length=args.max_length,
        )
        split = dataset.split
        header = {"task": dataset.name, "split": split or None, "scoring": dataset.scoring,
                  "data_source": dataset.source.location}
        result = {**header, **result, "seconds": round(time.perf_counter() - started, 1)}
        results.append(result)
        setting = ", ".join(filter(None, [split, f"{dataset.scoring} scoring", f"{args.num_fewshot}-shot"]))
        print(
            f"{dataset.name} ({setting}): "
            f"acc={result['acc']:.4f} acc_norm={result['acc_norm']:.4f} n={result['n']} chance={result['chance']:.4f}"
        )
    return results


def _run_glue(args) -> list[dict[str, Any]]:
    from aptune.data.glue import load_glue_task
    from aptune.eval.classification import evaluate_task

    model, tokenizer = _load(args, "sequence-classification")
    task = load_glue_task(args.task, tokenizer, max_length=args.max_length or 128, data_dir=args.data_dir,
                          max_eval_samples=args.max_samples, seed=args.seed, include_train=False)
    print(f"data: {task.name} from {task.source.describe()}")
    for note in task.notes:
        if note != task.source.note:  # the source's description already says it
            print(f"note: {note}")
    started = time.perf_counter()
    metrics = evaluate_task(model, task, pad_token_id=tokenizer.pad_token_id or 0, batch_size=args.batch_size,
                            progress=not args.no_progress)
    shown = " ".join(f"{name}={metrics[name]:.4f}" for name in task.metric_names)
    print(f"{task.name} (dev): {shown} n={metrics['n']}")
    return [{"task": task.name, "split": "dev", "data_source": task.source.location, **metrics,
             "primary_metric": task.primary_metric, "seconds": round(time.perf_counter() - started, 1)}]


def _run_generations(args, prompts: list[str]) -> list[dict[str, Any]]:
    from aptune.eval.generate import greedy_answers

    model, tokenizer = _load(args, "causal-lm")
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens)
    for answer in answers:
        print(f"> {answer['instruction']}\n{answer['answer']}\n")
    return answers


def _run_lm_eval(args) -> list[dict[str, Any]]:
    from aptune.eval.lm_eval_bridge import lm_eval_available, run_lm_eval

    if not lm_eval_available():
        raise ValueError('--lm-eval needs lm-evaluation-harness: pip install "lm-eval>=0.4.5"')
    tasks = [task.strip() for task in args.lm_eval.split(",") if task.strip()]
    model, tokenizer = _load(args, "causal-lm")
    output = run_lm_eval(model, tokenizer, tasks, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                         limit=args.max_samples)
    results = []
    for task, metrics in output.items():
        shown = " ".join(f"{name}={value:.4f}" for name, value in metrics.items() if "stderr" not in name)
        print(f"{task} (lm-eval, {args.num_fewshot}-shot): {shown}")
        results.append({"task": task, "harness": "lm-eval", **metrics})
    return results


def run(args: argparse.Namespace) -> int:
    from aptune.data.glue import GLUE_TASKS, glue_task_spec

    if args.num_fewshot < 0 or args.batch_size < 1:
        raise ValueError("--num-fewshot must be >= 0 and --batch-size >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not (args.task or args.mc_file or args.lm_eval or args.prompts):
        raise ValueError("nothing to evaluate: give --task, --mc-file, --lm-eval or --prompts")
    if args.data_dir is not None and not args.data_dir.is_dir():  # say so before a model is loaded
        raise FileNotFoundError(f"--data-dir {args.data_dir} does not exist (or is not a folder); when a data "
                                "folder is given, nothing else is read")
    prompts = None
    if args.prompts:
        from aptune.eval.generate import read_prompts

        prompts = read_prompts(args.prompts)  # a bad file fails before any model is loaded
    results, target = [], "generations"
    if args.lm_eval:
        results, target = _run_lm_eval(args), "lm-eval_" + args.lm_eval
    elif args.mc_file is not None:
        results, target = _run_multiple_choice(args), args.mc_file.stem
    elif args.task:
        names = _task_names(args.task)
        if names and all(name in MC_TASK_NAMES for name in names):
            results, target = _run_multiple_choice(args), "+".join(names) + (f"-{args.split}" if args.split else "")
        elif len(names) > 1:
            raise ValueError(f"only multiple-choice tasks ({', '.join(MC_TASK_NAMES)}) can be combined in --task")
        else:
            try:
                glue_task_spec(args.task)
            except ValueError:
                raise ValueError(
                    f"unknown task {args.task!r}: choose a GLUE task ({', '.join(GLUE_TASKS)}), a multiple-choice "
                    f"task ({', '.join(MC_TASK_NAMES)}), or use --mc-file / --lm-eval"
                ) from None
            results, target = _run_glue(args), glue_task_spec(args.task).name
    generations = _run_generations(args, prompts) if prompts else None
    output = args.output or Path("runs") / "eval" / _slug(Path(str(args.model)).name) / f"{_slug(target)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": str(args.model),
        "num_fewshot": args.num_fewshot,
        "max_samples": args.max_samples,
        "seed": args.seed,
        "results": results,
    }
    if generations is not None:
        record["generations"] = generations
    if vars(args).get("_warnings"):
        record["warnings"] = vars(args)["_warnings"]
    write_json(output, record)
    print(f"wrote {output}")
    return 0


def write_json(path: Path, record: Any) -> None:
    """Strict JSON: a value that is not a number (the standard error of a single item) is written as null,
    since a bare NaN is not JSON and strict readers refuse the file."""
    path.write_text(json.dumps(_nan_to_none(record), indent=2, allow_nan=False) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value
