"""Evaluation metrics of a fine-tuned model on a target task's validation split: each family computes its own
(``prefinetune.families``) from the functions of ``prefinetune.metrics``."""

from __future__ import annotations

from .families import FAMILIES, family

# The metrics computed for each task type; a target's headline metric must be one of these.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {kind: f.metrics[kind] for kind, f in FAMILIES.items()}
ALL_METRICS = tuple(dict.fromkeys(m for ms in METRICS_BY_TYPE.values() for m in ms))


def compute_metrics(task_type: str, predictions, labels) -> dict[str, float]:
    """All metrics of ``METRICS_BY_TYPE[task_type]`` as plain floats, from what the family's evaluation
    collects: logits (N, C) for classification, values (N,) or (N, 1) for regression, choice scores (N, C)
    with -inf where a row has fewer choices for multiple choice, answer strings and lists of gold answers for
    span extraction."""
    metrics = family(task_type).compute_metrics(task_type, predictions, labels)
    assert tuple(metrics) == METRICS_BY_TYPE[task_type]
    return metrics
