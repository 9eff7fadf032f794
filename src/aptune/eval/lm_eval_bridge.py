"""Run lm-evaluation-harness tasks on an in-memory (e.g. pruned) model.

API::

    results = run_lm_eval(model, tokenizer, ["arc_easy", "sciq"], num_fewshot=0, batch_size=8)
    results["arc_easy"]    # {"acc": ..., "acc_norm": ..., ...}

lm-eval is optional (``pip install "aptune[eval]"``); it is imported only here, on call. The model is
handed to lm-eval's ``HFLM`` wrapper as an object, so a model pruned in memory is evaluated as it is,
without saving and reloading it. lm-eval fetches its task data from the hub; offline it only works
for tasks already in the ``datasets`` cache. :func:`aptune.eval.mc.evaluate_multiple_choice` is the
offline alternative for ARC, SciQ, MMLU and custom JSONL sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

INSTALL_HINT = 'pip install "lm-eval>=0.4.5" (or pip install "aptune[eval]")'


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
