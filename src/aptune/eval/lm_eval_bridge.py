"""Run lm-evaluation-harness tasks on an in-memory (e.g. pruned) model.

API::

    results = run_lm_eval(model, tokenizer, ["arc_easy", "sciq"], num_fewshot=0, batch_size=8)
    results["arc_easy"]    # {"acc": ..., "acc_norm": ..., ...}

lm-eval is optional (``pip install "aptune[eval]"``); it is imported only here, on call. The model is
handed to lm-eval's ``HFLM`` wrapper as an object, so a model pruned in memory is evaluated as it is,
without saving and reloading it. lm-eval fetches its task data from the hub; offline it only works
for tasks already in the ``datasets`` cache.

Offline, :func:`run_lm_eval_on_items` writes aptune's own multiple-choice items (ARC, SciQ, MMLU, a JSONL
file) as a local lm-eval task (a JSON Lines file and a task YAML that reads it) and lets lm-eval score exactly
those prompts, item by item: the judge for :func:`aptune.eval.mc.evaluate_multiple_choice`::

    result = run_lm_eval_on_items(model, tokenizer, load_arc("easy", "dev").items, "arc_easy_local", workdir)
    result["acc"], result["acc_norm"], result["details"]   # details: per item, lm-eval's 0/1 outcomes
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = 'pip install "lm-eval==0.4.13" (or pip install "aptune[eval]")'


def lm_eval_available() -> bool:
    """Whether lm-evaluation-harness can be imported."""
    try:
        import lm_eval  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _metric_key(name: str) -> str:
    # lm-eval 0.4 names metrics "acc,none" (metric, filter); keep plain names for filter "none".
    metric, _, filter_name = name.partition(",")
    return metric if filter_name in ("", "none") else f"{metric}[{filter_name}]"


def run_lm_eval(
    model,
    tokenizer,
    tasks: Sequence[str],
    num_fewshot: int | None = None,
    batch_size: int = 8,
    limit: int | float | None = None,
    device: str | None = None,
    **simple_evaluate_kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on lm-eval tasks.

    Args:
        model: an in-memory ``transformers`` causal LM.
        tokenizer: its tokenizer.
        tasks: lm-eval task names (``arc_easy``, ``hellaswag``...).
        num_fewshot: examples in context (``None``: each task's default).
        batch_size: lm-eval batch size.
        limit: evaluate only this many (or this fraction of) examples per task.
        device: device string for lm-eval (default: the model's).
        **simple_evaluate_kwargs: passed to ``lm_eval.simple_evaluate``.

    Returns:
        ``{task: {metric: value}}`` with lm-eval's metric names (``acc``, ``acc_norm``, ``acc_stderr``...).

    Raises:
        ImportError: lm-eval is not installed (the message says how to install it).
    """
    try:
        import lm_eval  # noqa: PLC0415
        from lm_eval.models.huggingface import HFLM  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(f"the lm-eval bridge needs lm-evaluation-harness: {INSTALL_HINT} ({err})") from err
    if device is None:
        device = str(next(model.parameters()).device)
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    output = lm_eval.simple_evaluate(
        model=wrapped, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, **simple_evaluate_kwargs
    )
    results: dict[str, dict[str, float]] = {}
    for task, metrics in (output or {}).get("results", {}).items():
        results[task] = {
            _metric_key(name): float(value)
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
    return results


# ------------------------------------------------------------------------------------- local tasks


def write_local_task(items: Sequence, folder: str | Path, name: str) -> Path:
    """Write ``items`` (:class:`aptune.data.multiple_choice.MCItem`) as the lm-eval task ``name`` in ``folder``:
    ``name.jsonl`` (one record per item: the prompt as aptune builds it at zero shots, the choices, the answer)
    and ``name.yaml`` (a ``multiple_choice`` task over that file with acc and acc_norm). Returns the folder."""
    items = list(items)
    delimiters = {item.target_delimiter for item in items}
    if len(delimiters) != 1:
        raise ValueError(f"the items of one lm-eval task need one target delimiter; these use {sorted(delimiters)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    with data.open("w") as handle:
        for number, item in enumerate(items):
            record = {"id": item.id or str(number), "text": item.description + item.context,
                      "choices": list(item.choices), "answer": int(item.answer)}
            handle.write(json.dumps(record) + "\n")
    # JSON is YAML: the task file is written with json.dumps so that every string is quoted safely
    task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "text",
            "doc_to_choice": "choices", "doc_to_target": "answer", "target_delimiter": delimiters.pop(),
            "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}
                            for metric in ("acc", "acc_norm")],
            "metadata": {"version": 1.0}}
    (folder / f"{name}.yaml").write_text(json.dumps(task, indent=1))
    return folder


def run_lm_eval_on_items(model, tokenizer, items: Sequence, name: str, workdir: str | Path, batch_size: int = 8,
                         device: str | None = None) -> dict[str, Any]:
    """Score ``items`` with lm-eval, zero-shot, through a local task (:func:`write_local_task`; no network).

    Returns ``acc``, ``acc_norm`` and ``details``: per item (in ``items`` order) ``id``, ``acc`` and ``acc_norm``
    as lm-eval scored it (0 or 1), and its log-likelihood of every choice."""
    try:
        import lm_eval  # noqa: PLC0415
        from lm_eval.models.huggingface import HFLM  # noqa: PLC0415
        from lm_eval.tasks import TaskManager  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(f"the lm-eval bridge needs lm-evaluation-harness: {INSTALL_HINT} ({err})") from err
    items = list(items)
    folder = write_local_task(items, workdir, name)
    if device is None:
        device = str(next(model.parameters()).device)
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    output = lm_eval.simple_evaluate(model=wrapped, tasks=[name], num_fewshot=0, log_samples=True,
                                     task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    metrics = {_metric_key(k): float(v) for k, v in output["results"][name].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    samples = sorted(output["samples"][name], key=lambda sample: sample["doc_id"])
    details = [{"id": sample["doc"]["id"], "acc": float(sample["acc"]), "acc_norm": float(sample["acc_norm"]),
                "loglikelihoods": [float(response[0]) for response in sample["filtered_resps"]]}
               for sample in samples]
    return {"acc": metrics["acc"], "acc_norm": metrics["acc_norm"], "n": len(details), "details": details}
