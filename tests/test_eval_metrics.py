"""Each task metric equals its scikit-learn / SciPy reference on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from aptune.eval.metrics import (
    accuracy,
    average_ranks,
    compute_metrics,
    f1_binary,
    matthews_correlation,
    pearson,
    spearman,
)

SEEDS = range(25)


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.integers(0, 2, n)
    predictions = np.where(rng.random(n) < rng.random(), labels, rng.integers(0, 2, n))
    assert accuracy(predictions, labels) == pytest.approx(skm.accuracy_score(labels, predictions), abs=1e-12)
    expected_f1 = skm.f1_score(labels, predictions, zero_division=0)
    assert f1_binary(predictions, labels) == pytest.approx(expected_f1, abs=1e-12)
    expected_mcc = skm.matthews_corrcoef(labels, predictions)
    assert matthews_correlation(predictions, labels) == pytest.approx(expected_mcc, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_mcc_and_accuracy_match_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 300))
    labels = rng.integers(0, 3, n)
    predictions = np.where(rng.random(n) < 0.5, labels, rng.integers(0, 3, n))
    expected_mcc = skm.matthews_corrcoef(labels, predictions)
    assert matthews_correlation(predictions, labels) == pytest.approx(expected_mcc, abs=1e-12)
    assert accuracy(predictions, labels) == pytest.approx(skm.accuracy_score(labels, predictions), abs=1e-12)


def test_degenerate_cases_follow_sklearn():
    constant = np.ones(10, dtype=int)
    labels = np.r_[np.ones(5), np.zeros(5)].astype(int)
    assert matthews_correlation(constant, labels) == skm.matthews_corrcoef(labels, constant) == 0.0
    zeros = np.zeros(10, dtype=int)
    assert f1_binary(zeros, zeros) == skm.f1_score(zeros, zeros, zero_division=0) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(3, 400))
    labels = rng.uniform(0, 5, n)
    predictions = labels * rng.random() + rng.normal(0, 1, n)
    assert pearson(predictions, labels) == pytest.approx(stats.pearsonr(predictions, labels)[0], abs=1e-10)
    assert spearman(predictions, labels) == pytest.approx(stats.spearmanr(predictions, labels)[0], abs=1e-10)
    # Ties, as STS-B's quantised scores have: ranks must be averaged.
    tied_labels = np.round(labels * 2) / 2
    tied_predictions = np.round(predictions)
    if np.ptp(tied_predictions) > 0 and np.ptp(tied_labels) > 0:
        expected = stats.spearmanr(tied_predictions, tied_labels)[0]
        assert spearman(tied_predictions, tied_labels) == pytest.approx(expected, abs=1e-10)
    assert np.allclose(average_ranks(tied_labels), stats.rankdata(tied_labels))


def test_compute_metrics_takes_logits_and_regression_columns():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 2))
    labels = rng.integers(0, 2, 50)
    result = compute_metrics(("f1", "accuracy"), logits, labels)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, logits.argmax(-1)))
    assert result["f1"] == pytest.approx(skm.f1_score(labels, logits.argmax(-1)))
    scores = rng.normal(size=(50, 1))
    gold = rng.uniform(0, 5, 50)
    regression = compute_metrics(("pearson", "spearman"), scores, gold, is_regression=True)
    assert regression["pearson"] == pytest.approx(stats.pearsonr(scores[:, 0], gold)[0])
    with pytest.raises(ValueError, match="unknown"):
        compute_metrics(("bleu",), logits, labels)
