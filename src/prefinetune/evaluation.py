"""The evaluation driver: a fine-tuned model on a target's validation split, scored by the target's family.

It loads the tokenized split (and the original examples, where the family's data part keeps them), runs the
model over it batch by batch, predicting with the heads or, for a family whose scorer ``generates``, generating
text with beam search and decoding it, and feeds each batch to the family's scorer, which turns what it
accumulated into metrics (``prefinetune.families``: no scorer loads data or runs the model).
"""

from __future__ import annotations

import numpy as np
import torch

from .batching import collate, task_arrays, to_device
from .data import load_tokenized
from .families import METRICS_BY_TYPE, family
from .faults import Fault
from .heads import MultiTaskModel
from .tasks import Task
from .training import autocast, pick_device


def evaluate(model: MultiTaskModel, task: Task, tokenized: str, pad_id: int, settings: dict,
             precision: str = "fp32", model_dir: str | None = None) -> dict:
    """Every metric of the task's type on its validation split, run at the training's (resolved) ``precision``,
    and ``chance``: the metric's score there of a prediction that learnt nothing (:func:`chance_score`);
    ``model_dir`` has the tokenizer (families that generate decode text)."""
    fam = family(task)
    validation = load_tokenized(tokenized, "validation")
    examples = load_tokenized(tokenized, "validation_examples") if fam.data.keeps_examples else None
    scorer = fam.scorer(task, settings, validation, examples)
    batch_size = settings["eval_batch_size"]
    if scorer.generates:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        options = {"max_length": task.max_target_length, **(task.generation or {})}
        texts = [tokenizer.decode(ids, skip_special_tokens=True).strip()
                 for ids in generate(model, validation, task, pad_id, batch_size, precision, options)]
        scorer.add(texts, None, None)
    else:
        row = 0
        for inputs, out in predict(model, validation, task, pad_id, batch_size, precision):
            outputs = out.float().cpu().numpy()
            check_finite(outputs, task, row, scorer.padding)
            scorer.add(outputs, inputs["segments"][0].labels.cpu().numpy(), inputs["attention_mask"].sum(-1).tolist())
            row += len(outputs)
    metrics = scorer.result()
    return {**metrics, "chance": chance_score(task, scorer, metrics)}


def chance_score(task: Task, scorer, metrics: dict) -> float:
    """The task's metric on the split ``scorer`` accumulated, for a prediction that learnt nothing of the target
    (``failed_runs.py``): the best constant class (classification) or answer position (multiple choice), a
    constant value (regression: a correlation of 0), the empty answer (span), the lead baseline (summarization)."""
    if task.type == "regression":
        return 0.0
    if task.type == "summarization":
        return float(metrics[f"lead_{task.metric}"])
    if task.type == "span":
        golds = [a["text"] for a in scorer.examples["answers"]]
        return float(scorer.compute(task.type, [""] * len(golds), golds)[task.metric])
    labels = np.concatenate(scorer.labels).astype(int)
    width = task.num_labels if task.type == "classification" else max(o.shape[1] for o in scorer.outputs)
    constant = lambda c: np.eye(width)[np.full(len(labels), c)]  # noqa: E731  every row predicts c
    return max(float(scorer.compute(task.type, constant(c), labels)[task.metric]) for c in range(width))


def chance_loss(task: Task, ds) -> float | None:
    """The plain loss, on the tokenized examples ``ds``, of the best prediction that ignores the input: the
    entropy of their labels' frequencies (classification, multiple choice: predicting those frequencies), their
    variance (regression: predicting their mean); None for span and summarization (``failed_runs.py``)."""
    if task.type == "regression":
        return round(float(np.var(np.asarray(ds["label"], float))), 6)
    if task.type not in ("classification", "multiple_choice"):
        return None
    _, counts = np.unique(np.asarray(ds["label"], int), return_counts=True)
    share = counts / counts.sum()
    return round(float(-(share * np.log(share)).sum()), 6)


def check_finite(outputs: np.ndarray, task: Task, first_row: int, padding: float | None = None) -> None:
    """Outputs of one batch (rows ``first_row`` on) must be finite numbers: NaN or inf is never scored (the argmax of
    NaN logits would score as the share of class 0). ``padding``: the value that marks no output (a missing choice)."""
    bad = ~np.isfinite(outputs)
    if padding is not None:
        bad &= outputs != padding
    rows = np.flatnonzero(bad.reshape(len(outputs), -1).any(axis=1))
    if len(rows):
        value = outputs[rows[0]][bad[rows[0]]].flat[0]
        raise Fault(f"task {task.name}: validation row {first_row + rows[0] + 1}: the model's output {value} is not a "
                    "finite number; no metrics written")


def eval_batches(model: MultiTaskModel, ds, task: Task, pad_id: int, batch_size: int):
    """Moves the model to the device, in eval mode (no dropout), and yields a whole split's consecutive batches
    as model inputs on that device, in order."""
    device = pick_device()
    model.to(device).eval()
    arrays = task_arrays({task.name: ds}, {task.name: task})
    for lo in range(0, len(ds), batch_size):
        batch = [(task.name, i) for i in range(lo, min(lo + batch_size, len(ds)))]
        yield to_device(collate(arrays, batch, pad_id), device)


@torch.no_grad()
def predict(model: MultiTaskModel, ds, task: Task, pad_id: int, batch_size: int, precision: str = "fp32"):
    """Yields (inputs on the device, the task's outputs) for consecutive batches of a whole split, in order.
    ``precision`` as in training (resolved)."""
    for inputs in eval_batches(model, ds, task, pad_id, batch_size):
        with autocast(precision, pick_device()):
            _, out = model(**inputs)
        yield inputs, out[task.name]


@torch.no_grad()
def generate(model: MultiTaskModel, ds, task: Task, pad_id: int, batch_size: int, precision: str, settings: dict):
    """Yields the generated ids of every example of a split, in order: beam search as ``settings`` say
    (``transformers``' generate: num_beams, min_length, max_length, length_penalty, no_repeat_ngram_size)."""
    for inputs in eval_batches(model, ds, task, pad_id, batch_size):
        with autocast(precision, pick_device()):
            out = model.encoder.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                         early_stopping=True, **settings)
        yield from out.tolist()


def compute_metrics(task_type: str, predictions, labels) -> dict[str, float]:
    """All metrics of ``METRICS_BY_TYPE[task_type]`` as plain floats, from a whole split's predictions: logits
    (N, C) for classification, values (N,) or (N, 1) for regression, choice scores (N, C) with -inf where a row
    has fewer choices for multiple choice, answer strings and lists of gold answers for span extraction,
    generated and reference texts for summarization."""
    metrics = family(task_type).scorer.compute(task_type, predictions, labels)
    assert tuple(metrics) == METRICS_BY_TYPE[task_type]
    return metrics
