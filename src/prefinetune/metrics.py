"""The metrics behind every family's evaluation, as plain functions of predictions and gold labels.

Span extraction is scored like SQuAD's official script: exact match and token F1 of the predicted text
against each gold answer (the best over the gold answers), after normalising case, punctuation, articles
and whitespace; an unanswerable question's gold is the empty string.

The classification and regression definitions are scikit-learn's and SciPy's (tests compare them on random
data); they are written with numpy here because every fine-tuning job computes them, and importing those two
libraries would cost each job more than a second.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

PUNCTUATION = frozenset(string.punctuation)


def classification_metrics(logits, labels) -> dict[str, float]:
    """accuracy, f1, matthews of logits (N, C) (the predicted class is the argmax); "f1" is the binary F1 of
    class 1 when C == 2 and the macro-F1 otherwise."""
    logits = np.asarray(logits)
    pred, gold = logits.argmax(axis=-1), np.asarray(labels).astype(int)
    f1 = _f1(gold, pred, positive=1) if logits.shape[-1] == 2 else _macro_f1(gold, pred)
    return {"accuracy": float(np.mean(pred == gold)), "f1": float(f1), "matthews": float(_matthews(gold, pred))}


def regression_metrics(predictions, labels) -> dict[str, float]:
    """pearson, spearman of predictions (N,) or (N, 1). A correlation is undefined when either array is constant;
    it is then reported as 0.0 (no detectable relation) rather than NaN."""
    pred = np.asarray(predictions, dtype=float).reshape(-1)
    gold = np.asarray(labels, dtype=float).reshape(-1)
    return {"pearson": float(_pearson(pred, gold)), "spearman": float(_pearson(_ranks(pred), _ranks(gold)))}


def choice_accuracy(scores, labels) -> dict[str, float]:
    """accuracy of choice scores (N, C), -inf where a row has fewer choices."""
    return {"accuracy": float(np.mean(np.asarray(scores).argmax(axis=-1) == np.asarray(labels).astype(int)))}


def _f1(gold: np.ndarray, pred: np.ndarray, positive: int) -> float:
    tp = np.sum((pred == positive) & (gold == positive))
    denominator = np.sum(pred == positive) + np.sum(gold == positive)
    return 0.0 if denominator == 0 else 2 * tp / denominator


def _macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the labels or the predictions (scikit-learn's macro)."""
    return float(np.mean([_f1(gold, pred, c) for c in np.union1d(gold, pred)]))


def _matthews(gold: np.ndarray, pred: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K), as scikit-learn; 0 when undefined."""
    classes = np.union1d(gold, pred)
    confusion = np.array([[np.sum((gold == a) & (pred == b)) for b in classes] for a in classes], dtype=float)
    t, p, c, s = confusion.sum(axis=1), confusion.sum(axis=0), np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    return 0.0 if denominator == 0 else (c * s - t @ p) / denominator


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank (SciPy's rankdata)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of the last member of each group of equal values
    return (last - (counts - 1) / 2)[inverse]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


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


def rouge(predictions: list[str], references: list[str], predicted_lines=None, reference_lines=None) -> dict:
    """Mean ROUGE-1, -2, -L and -Lsum F-measures in [0, 1], from Google's ``rouge-score`` with Porter stemming.
    ROUGE-Lsum reads ``predicted_lines`` and ``reference_lines``: the texts with one sentence per line."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    predicted_lines = predictions if predicted_lines is None else predicted_lines
    reference_lines = references if reference_lines is None else reference_lines
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    totals = dict.fromkeys(["rouge1", "rouge2", "rougeL", "rougeLsum"], 0.0)
    for p, r, pl, rl in zip(predictions, references, predicted_lines, reference_lines):
        for name, score in {**scorer.score(r, p), **lsum.score(rl, pl)}.items():
            totals[name] += score.fmeasure
    n = max(len(predictions), 1)
    return {name: total / n for name, total in totals.items()}
