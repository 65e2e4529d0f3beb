"""Metric values on small arrays whose answers can be checked by hand."""

import math

import numpy as np
import pytest

from prefinetune.evaluation import METRICS_BY_TYPE, compute_metrics


def logits_for(classes, n_classes):
    """One-hot logits whose argmax is ``classes``."""
    return np.eye(n_classes)[classes]


def test_binary_classification_by_hand():
    # gold 1,1,0,0 vs predicted 1,0,0,0: TP=1, FN=1, TN=2, FP=0
    m = compute_metrics("classification", logits_for([1, 0, 0, 0], 2), np.array([1, 1, 0, 0]))
    assert tuple(m) == METRICS_BY_TYPE["classification"]
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert m["matthews"] == pytest.approx(2 / math.sqrt(12))  # (1*2 - 0*1) / sqrt(1*2*2*3)
    assert all(type(v) is float for v in m.values())


def test_argmax_of_real_logits():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [-5.0, -4.0]])  # argmax 0, 1, 1
    assert compute_metrics("classification", logits, np.array([0, 1, 1]))["accuracy"] == 1.0


def test_multiclass_uses_macro_f1():
    # per-class F1: class 0 -> 1, class 1 -> 2/3, class 2 -> 2/3; binary F1 would raise here
    m = compute_metrics("classification", logits_for([0, 1, 1, 2], 3), np.array([0, 1, 2, 2]))
    assert m["f1"] == pytest.approx(7 / 9)
    assert m["accuracy"] == pytest.approx(3 / 4)


def test_regression_correlations():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    linear = compute_metrics("regression", 2 * x + 1, x)
    assert linear["pearson"] == pytest.approx(1.0)
    cubic = compute_metrics("regression", (x**3).reshape(-1, 1), x)  # (N, 1) predictions
    assert cubic["spearman"] == pytest.approx(1.0)
    assert cubic["pearson"] < 0.99  # monotone but not linear
    anti = compute_metrics("regression", -x, x)
    assert anti["spearman"] == pytest.approx(-1.0)
    assert tuple(linear) == METRICS_BY_TYPE["regression"]
    assert all(type(v) is float for v in linear.values())


def test_constant_predictions_give_zero_not_nan():
    m = compute_metrics("regression", np.full(4, 0.5), np.array([0.0, 1.0, 2.0, 3.0]))
    assert m == {"pearson": 0.0, "spearman": 0.0}


def test_unknown_task_type_is_named():
    with pytest.raises(ValueError, match="ranking"):
        compute_metrics("ranking", np.zeros(3), np.zeros(3))


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_classification_metrics_equal_scikit_learn(n_classes):
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(n_classes)
    for size in (1, 7, 200):
        gold = rng.integers(0, n_classes, size)
        logits = rng.normal(size=(size, n_classes)) + 1.5 * np.eye(n_classes)[gold] * rng.integers(0, 2, (size, 1))
        pred = logits.argmax(-1)
        m = compute_metrics("classification", logits, gold)
        average = "binary" if n_classes == 2 else "macro"
        assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred))
        assert m["f1"] == pytest.approx(f1_score(gold, pred, average=average, zero_division=0))
        assert m["matthews"] == pytest.approx(matthews_corrcoef(gold, pred))


def test_correlations_equal_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 300).astype(float)  # many ties, as in STS-B's 0..5 scores
    pred = np.round(gold + rng.normal(0, 1.5, 300), 1)
    m = compute_metrics("regression", pred, gold)
    assert m["pearson"] == pytest.approx(stats.pearsonr(pred, gold).statistic)
    assert m["spearman"] == pytest.approx(stats.spearmanr(pred, gold).statistic)
