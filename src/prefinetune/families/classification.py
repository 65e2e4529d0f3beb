"""Classification and regression: a sentence or a sentence pair, a head of its own per dataset.

Layout: the registry's text column(s) and its label column; class labels are whole numbers 0..num_labels-1
(after ``label_map``, or read from the training split when it holds text), regression labels are numbers.
Tokenized as one sequence, truncated jointly (``longest_first``: the longer sentence loses its end). The head
is RoBERTa's sentence head on the sequence's pooled state (the first token; BART: the last end-of-sequence
token); the loss is cross-entropy (scaled by 1 / log(classes)) or squared error (scaled by 1 / the variance of
the training labels: predicting their mean then costs 1, as a uniform prediction over the classes does).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


from ..checks import map_label, origin
from ..metrics import classification_metrics, regression_metrics
from ..tasks import ConfigError, Task
from .base import Data, Family, Model, Scorer


class ClassificationData(Data):
    label_maps = ("classification",)

    def check_entry(self, task, fail):
        if task.type == "regression" and task.num_labels != 1:
            fail("num_labels", "regression tasks have 1")
        if task.type == "classification" and task.num_labels < 2:
            fail("num_labels", "classification tasks need at least 2 (classes or choices)")

    def prepare(self, raw, task):
        return labels_from_data(raw, task)

    def layout(self, ds, task, where, file):
        from datasets import Value

        if task.label_map is not None:
            features = ds.features.copy()
            features[task.label] = Value("int64")
            mapping = {str(k): v for k, v in task.label_map.items()}
            ds = ds.map(lambda rows, rows_i: {task.label: [mapping[str(y)] if y is not None and str(y) in mapping
                                                           else map_label(y, task, where, i + 1)  # raises
                                                           for y, i in zip(rows[task.label], rows_i)]},
                        batched=True, with_indices=True, features=features, desc="labels")
        check_labels(ds, task, where, file)
        return ds

    def check_training(self, ds, task, where):
        """Labels that vary: one class, or one regression value, leaves nothing to learn (and Pearson undefined)."""
        import pyarrow.compute as pc

        values = pc.unique(ds.with_format("arrow")[task.label])
        if len(values) < 2:
            needs = "two classes" if task.type == "classification" else "labels that vary"
            raise ConfigError(f"{where}: column '{task.label}': every row's label is {values[0].as_py()!r}; the "
                              f"training split needs {needs}")

    def encoder(self, task, tokenizer, lengths):
        def encode(batch):
            enc = tokenizer(*[batch[column] for column in task.text], truncation=True,
                            max_length=lengths["max_length"])
            return {"input_ids": enc["input_ids"], "label": batch[task.label]}

        return encode


class ClassificationModel(Model):
    def make_head(self, task, hidden_size, dropout):
        from .layers import ClassificationHead

        return ClassificationHead(hidden_size, task.num_labels, dropout)

    def outputs(self, task, head, states, seg):
        return head(states.pooled[seg.start:seg.end])

    def label_cost(self, task, labels):
        variance = float(np.var(labels)) if task.type == "regression" and len(labels) else 0.0
        return variance if variance > 0 else None

    def losses(self, task, outputs, labels, mask=None, smoothing=0.0, label_cost=None):
        from .layers import cross_entropy, squared_error

        if task.type == "regression":  # predicting the training labels' mean costs their variance
            return squared_error(outputs.squeeze(-1), labels), label_cost
        return cross_entropy(outputs, labels), outputs.isfinite().sum(-1).float().log()


class ClassificationScorer(Scorer):
    metrics = {"classification": ("accuracy", "f1", "matthews"), "regression": ("pearson", "spearman")}

    @classmethod
    def compute(cls, task_type, predictions, labels):
        if task_type == "regression":
            return regression_metrics(predictions, labels)
        return classification_metrics(predictions, labels)


FAMILY = Family("classification", ClassificationData(), ClassificationModel(), ClassificationScorer)


def check_labels(ds, task: Task, where: str, file: Path | None = None) -> None:
    """Classification labels are whole numbers 0..num_labels-1 (a float gets its own message); regression
    labels are numbers. ``file``: a local jsonl file, searched for the first float label's line."""
    import pyarrow.compute as pc

    values = ds.with_format("arrow")[task.label]
    dtype = getattr(ds.features[task.label], "dtype", None)

    def fail(row, message):
        raise ConfigError(f"{where}: row {row + 1}: column '{task.label}': {message}")

    if values.null_count:
        fail(pc.index(pc.is_null(values), True).as_py(), "the label is null")
    if dtype is not None and dtype.startswith("float"):
        row = pc.index(pc.invert(pc.is_finite(values)), True).as_py()
        if row >= 0:
            fail(row, f"label {values[row].as_py()!r} is not a finite number")
    numeric = dtype is not None and dtype.startswith(("int", "uint", "float"))
    if task.type == "regression":
        if not numeric:
            fail(0, f"{ds[0][task.label]!r} is not a number (regression labels are numbers)")
        return
    if dtype is not None and dtype.startswith("float"):
        row = _first_float_row(values, task.label, file)
        value = values[row].as_py()
        fail(row, f"label {value!r} is a float; classification labels are whole numbers 0..{task.num_labels - 1}"
                  + (f" (write {int(value)})" if value.is_integer() else ""))
    if not numeric:
        hint = "; give a label_map, or leave it out to read the labels from the data" if dtype == "string" else ""
        fail(0, f"label {ds[0][task.label]!r} is {dtype}, not a class index 0..{task.num_labels - 1}{hint}")
    outside = pc.or_(pc.less(values, 0), pc.greater_equal(values, task.num_labels))
    row = pc.index(outside, True).as_py()
    if row >= 0:
        fail(row, f"label {values[row].as_py()!r} out of range 0..{task.num_labels - 1}")


def _first_float_row(values, label: str, file: Path | None) -> int:
    """The first row whose label is not a whole number; else, in a jsonl file, the first written as a float
    (one float in a file makes Arrow read the whole column as floats)."""
    import pyarrow.compute as pc

    row = pc.index(pc.not_equal(values, pc.floor(values)), True).as_py()
    if row >= 0 or file is None or file.suffix != ".jsonl":
        return max(row, 0)
    rows = (json.loads(line) for line in file.read_text().splitlines() if line.strip())
    return next((i for i, r in enumerate(rows) if isinstance(r.get(label), float)), 0)


def labels_from_data(raw, task: Task) -> Task:
    """A classification task with text labels and no label_map: the map is the sorted set of the training
    split's labels. ``num_labels`` must match it, and every validation label must be one of them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    train_name, val_name = task.splits["train"], task.splits["validation"]
    if task.type != "classification" or task.label_map is not None or train_name not in raw:
        return task
    train = raw[train_name]
    if getattr(train.features.get(task.label), "dtype", None) not in ("string", "large_string"):
        return task  # numbers (checked later) or a missing column (select_splits names it)
    labels = sorted(pc.unique(train.with_format("arrow")[task.label]).drop_null().to_pylist())
    if len(labels) != task.num_labels:
        shown = labels if len(labels) <= 20 else [*labels[:20], "..."]
        raise ConfigError(f"task {task.name}: {origin(task, train_name)}: column '{task.label}': the training split has "
                          f"{len(labels)} labels {shown}, but {task.name}.num_labels is {task.num_labels}")
    if val_name in raw and task.label in raw[val_name].column_names:
        values = raw[val_name].with_format("arrow")[task.label]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            unseen = pc.invert(pc.fill_null(pc.is_in(values, value_set=pa.array(labels)), True))
            row = pc.index(unseen, True).as_py()
            if row >= 0:
                raise ConfigError(f"task {task.name}: {origin(task, val_name)}: row {row + 1}: column '{task.label}': label "
                                  f"{values[row].as_py()!r} is not one of the training split's labels {labels}")
    return dataclasses.replace(task, label_map={label: i for i, label in enumerate(labels)})

