"""Evaluation: task metrics, multiple-choice log-likelihood scoring, classification eval, lm-eval bridge.

* :mod:`aptune.eval.metrics`: accuracy, F1, MCC, Pearson, Spearman (NumPy).
* :mod:`aptune.eval.mc`: ``evaluate_multiple_choice(model, tokenizer, items, ...)`` -> acc / acc_norm.
* :mod:`aptune.eval.classification`: ``evaluate_task(model, task_data, ...)`` -> the GLUE task's metrics.
* :mod:`aptune.eval.lm_eval_bridge`: ``run_lm_eval(model, tokenizer, tasks, ...)`` when lm-eval is installed.
"""

from __future__ import annotations

from aptune.eval.classification import evaluate_task, predict_task
from aptune.eval.lm_eval_bridge import run_lm_eval
from aptune.eval.mc import choice_loglikelihoods, evaluate_multiple_choice
from aptune.eval.metrics import compute_metrics

__all__ = ["choice_loglikelihoods", "compute_metrics", "evaluate_multiple_choice", "evaluate_task", "predict_task",
           "run_lm_eval"]
