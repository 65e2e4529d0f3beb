"""Evaluation metrics of a fine-tuned model on a target task's validation split.

Span extraction is scored like SQuAD's official script: exact match and token F1 of the predicted text
against each gold answer (the best over the gold answers), after normalising case, punctuation, articles
and whitespace; an unanswerable question's gold is the empty string.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

# The metrics computed for each task type; a target's headline metric must be one of these.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "matthews"),
    "regression": ("pearson", "spearman"),
    "multiple_choice": ("accuracy",),
    "span": ("exact_match", "f1"),
}
ALL_METRICS = tuple(dict.fromkeys(m for ms in METRICS_BY_TYPE.values() for m in ms))
PUNCTUATION = frozenset(string.punctuation)


def compute_metrics(task_type: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of ``METRICS_BY_TYPE[task_type]`` as plain floats.

    multiple_choice: ``predictions`` are scores of shape (N, C), -inf where a row has fewer choices.
    span: ``predictions`` are predicted answer strings, ``labels`` lists of gold answer strings.

    classification: ``predictions`` are logits of shape (N, C), the predicted class is the argmax;
        "f1" is the binary F1 of class 1 when C == 2 and the macro-F1 otherwise.
    regression: ``predictions`` have shape (N,) or (N, 1). A correlation is undefined when either
        array is constant; it is then reported as 0.0 (no detectable relation) rather than NaN.
    """
    # Imported here: the registry imports this module, and most jobs never compute a metric.
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task_type == "span":
        return span_metrics(predictions, labels)
    if task_type == "multiple_choice":
        return {"accuracy": float(accuracy_score(labels, np.asarray(predictions).argmax(axis=-1)))}
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


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # unanswerable: right only if both are empty
        return float(pred_tokens == gold_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def span_metrics(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """Exact match and F1 in [0, 1], each the best over an example's gold answers, averaged over examples."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")
    em = f1 = 0.0
    for prediction, answers in zip(predictions, golds):
        answers = list(answers) or [""]
        em += max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)
        f1 += max(token_f1(prediction, a) for a in answers)
    n = max(len(predictions), 1)
    return {"exact_match": em / n, "f1": f1 / n}
