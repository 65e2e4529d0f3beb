"""Evaluation metrics of a fine-tuned model on a target task's test split."""

from __future__ import annotations

import numpy as np

# The metrics computed for each task type; a target's headline metric must be one of these.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "matthews"),
    "regression": ("pearson", "spearman"),
}


def compute_metrics(task_type: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of ``METRICS_BY_TYPE[task_type]`` as plain floats.

    classification: ``predictions`` are logits of shape (N, C), the predicted class is the argmax;
        "f1" is the binary F1 of class 1 when C == 2 and the macro-F1 otherwise.
    regression: ``predictions`` have shape (N,) or (N, 1). A correlation is undefined when either
        array is constant; it is then reported as 0.0 (no detectable relation) rather than NaN.
    """
    # Imported here: the registry imports this module, and most jobs never compute a metric.
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task_type == "classification":
        logits = np.asarray(predictions)
        pred = logits.argmax(axis=-1)
        average = "binary" if logits.shape[-1] == 2 else "macro"
        metrics = {
            "accuracy": accuracy_score(labels, pred),
            "f1": f1_score(labels, pred, average=average, zero_division=0),
            "matthews": matthews_corrcoef(labels, pred),
        }
    elif task_type == "regression":
        pred = np.asarray(predictions, dtype=float).reshape(-1)
        gold = np.asarray(labels, dtype=float).reshape(-1)
        constant = np.ptp(pred) == 0 or np.ptp(gold) == 0
        metrics = {
            "pearson": 0.0 if constant else stats.pearsonr(pred, gold).statistic,
            "spearman": 0.0 if constant else stats.spearmanr(pred, gold).statistic,
        }
    else:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {tuple(METRICS_BY_TYPE)}")
    assert tuple(metrics) == METRICS_BY_TYPE[task_type]
    return {name: float(value) for name, value in metrics.items()}
