"""Task metrics: accuracy, binary F1, Matthews correlation, Pearson and Spearman correlation.

Written with NumPy only (the tests check each against scikit-learn / SciPy on random inputs), so that
evaluation works in a minimal install and the definitions are visible:

* ``accuracy``: share of exact matches.
* ``f1``: binary F1 of the positive class 1, ``2TP / (2TP + FP + FN)``; 0 when there are no positives
  in either predictions or labels (scikit-learn's ``zero_division=0``).
* ``mcc``: Matthews correlation from the confusion matrix (the multi-class form, which equals the
  binary formula for two classes); 0 when undefined, like scikit-learn.
* ``pearson``: Pearson's r; ``nan`` when either input is constant (like SciPy).
* ``spearman``: Pearson's r of the ranks, ties sharing their average rank.

:func:`compute_metrics` takes what a model outputs (logits or class ids; scores for regression) and
returns the named metrics as plain floats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _as_int_arrays(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape[0]} predictions for {labels.shape[0]} labels")
    return predictions.astype(np.int64), labels.astype(np.int64)


def accuracy(predictions, labels) -> float:
    """Share of predictions equal to the label."""
    predictions, labels = _as_int_arrays(predictions, labels)
    return float(np.mean(predictions == labels)) if labels.size else float("nan")


def f1_binary(predictions, labels, positive: int = 1) -> float:
    """F1 score of the ``positive`` class."""
    predictions, labels = _as_int_arrays(predictions, labels)
    true_positive = np.sum((predictions == positive) & (labels == positive))
    false_positive = np.sum((predictions == positive) & (labels != positive))
    false_negative = np.sum((predictions != positive) & (labels == positive))
    denominator = 2 * true_positive + false_positive + false_negative
    return float(2 * true_positive / denominator) if denominator else 0.0


def matthews_correlation(predictions, labels) -> float:
    """Matthews correlation coefficient (multi-class form); 0 when undefined."""
    predictions, labels = _as_int_arrays(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true_ids, predicted_ids = encoded[: labels.size], encoded[labels.size :]
    confusion = np.zeros((classes.size, classes.size), dtype=np.float64)
    np.add.at(confusion, (true_ids, predicted_ids), 1.0)
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    correct = np.trace(confusion)
    total = confusion.sum()
    covariance = correct * total - true_counts @ predicted_counts
    spread = np.sqrt((total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts))
    return float(covariance / spread) if spread else 0.0


def pearson(predictions, labels) -> float:
    """Pearson correlation coefficient; ``nan`` when either side is constant."""
    x = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.shape[0]} predictions for {y.shape[0]} labels")
    x = x - x.mean()
    y = y - y.mean()
    spread = np.sqrt(np.dot(x, x) * np.dot(y, y))
    return float(np.dot(x, y) / spread) if spread else float("nan")


def average_ranks(values) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], values.size]
    run_ranks = (run_starts + run_ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, run_ends - run_starts)
    return ranks


def spearman(predictions, labels) -> float:
    """Spearman rank correlation (Pearson's r of average ranks)."""
    return pearson(average_ranks(predictions), average_ranks(labels))


CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "mcc": matthews_correlation,
}
REGRESSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": pearson,
    "spearman": spearman,
}


def predictions_from_outputs(outputs, is_regression: bool) -> np.ndarray:
    """Class ids from logits ``(N, C)`` (argmax) or ids ``(N,)``; scores ``(N,)`` or ``(N, 1)`` for regression."""
    outputs = np.asarray(outputs)
    if is_regression:
        return outputs.reshape(outputs.shape[0], -1)[:, 0].astype(np.float64) if outputs.size else outputs
    if outputs.ndim == 2:
        return outputs.argmax(axis=-1)
    return outputs


def compute_metrics(metric_names: Sequence[str], outputs, labels, is_regression: bool = False) -> dict[str, float]:
    """Compute the named metrics from model outputs.

    Args:
        metric_names: names from ``accuracy``, ``f1``, ``mcc``, ``pearson``, ``spearman``.
        outputs: logits ``(N, C)`` or class ids ``(N,)``; for regression, scores ``(N,)`` or ``(N, 1)``.
        labels: gold labels ``(N,)``.
        is_regression: whether ``outputs`` are scores rather than class logits.

    Returns:
        ``{name: value}`` with plain Python floats.
    """
    predictions = predictions_from_outputs(outputs, is_regression)
    table = REGRESSION_METRICS if is_regression else CLASSIFICATION_METRICS
    results = {}
    for name in metric_names:
        if name not in table:
            kind = "regression" if is_regression else "classification"
            raise ValueError(f"unknown {kind} metric {name!r}; known: {', '.join(table)}")
        results[name] = table[name](predictions, labels)
    return results
