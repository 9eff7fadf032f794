"""Evaluation: task metrics, multiple-choice log-likelihood scoring, classification eval, lm-eval bridge.

* :mod:`aptune.eval.metrics`: accuracy, F1, MCC, Pearson, Spearman (NumPy).
* :mod:`aptune.eval.mc`: ``evaluate_multiple_choice(model, tokenizer, items, ...)`` -> acc / acc_norm.
* :mod:`aptune.eval.classification`: ``evaluate_task(model, task_data, ...)`` -> the GLUE task's metrics.
* :mod:`aptune.eval.lm_eval_bridge`: ``run_lm_eval(model, tokenizer, tasks, ...)`` when lm-eval is installed.

Only the metrics are imported eagerly; the rest load on first use (``aptune.eval.evaluate_multiple_choice``
works), which keeps ``import aptune.data`` free of torch-heavy imports and of import cycles.
"""

from __future__ import annotations

import importlib

from aptune.eval.metrics import compute_metrics

_LAZY = {
    "evaluate_multiple_choice": "aptune.eval.mc",
    "choice_loglikelihoods": "aptune.eval.mc",
    "evaluate_task": "aptune.eval.classification",
    "predict_task": "aptune.eval.classification",
    "run_lm_eval": "aptune.eval.lm_eval_bridge",
}

__all__ = ["compute_metrics", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aptune.eval' has no attribute {name!r}")
