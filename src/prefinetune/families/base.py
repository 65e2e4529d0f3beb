"""The three parts every task family gives, after jiant's task, head and evaluation scheme.

  Data     registry checks, layout and row checks of a split, tokenization, labels and their collation
  Model    the head, its outputs on a segment of a batch, the per-example loss and the n of 1 / log(n)
  Scorer   accumulates a split's outputs batch by batch and turns them into metrics: no file I/O, no model

The data and scoring parts use numpy and pyarrow only, so download and tokenize jobs never load torch; the model
parts take it from ``families.layers`` when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tasks import Task


class Data:
    """Download, tokenize and collate. ``label_maps``: types whose raw labels a registry label_map may map to
    indices; ``reads_choices``: the entry names choice columns (and must); ``with_indices``: the tokenize map
    function takes row indices; ``keeps_examples``: the tokenized copy keeps the validation examples (scoring
    reads them)."""

    label_maps: tuple[str, ...] = ()
    reads_choices = False
    with_indices = False
    keeps_examples = False

    def check_entry(self, task: Task, fail) -> None:
        """Registry checks of this family; ``fail(field, message)`` stops with one line."""

    def input_columns(self, task: Task) -> list[str]:
        """The source columns an entry reads."""
        return list(dict.fromkeys([*task.text, task.label]))

    def prepare(self, raw, task: Task) -> Task:
        """The task with what only the data can say (e.g. a label map read from the training split)."""
        return task

    def layout(self, ds, task: Task, where: str, file: Path | None):
        """One split (only ``input_columns``, at least one row) checked and in the family's layout; ``where``
        names the split for messages, ``file`` is its local file if it has one."""
        raise NotImplementedError

    def check_training(self, ds, task: Task, where: str) -> None:
        """What the training split (in the family's layout) must hold beyond its rows being valid."""

    def encoder(self, task: Task, tokenizer, lengths: dict):
        """A batched map function: layout rows -> ``input_ids`` and labels. ``lengths``: max_length, doc_stride."""
        raise NotImplementedError

    def read_labels(self, table):
        """Per-example labels of a tokenized split (an Arrow table) as a numpy array."""
        return table.column("label").to_numpy().astype("float32")

    def shuffled_labels(self, labels, table, rng: np.random.Generator):
        """The null arm's labels (``read_labels``' array of the split ``table``): what they say about their inputs
        destroyed, everything else kept. Here, for classes and regression values: permuted across the examples."""
        return labels[rng.permutation(len(labels))]

    def batch_labels(self, labels, examples: np.ndarray) -> np.ndarray:
        """The labels of a batch's ``examples`` (indices into ``read_labels``' array), as one numpy array."""
        return labels[examples]


class Model:
    """The head and the loss. ``shared_head``: one head for every dataset of the type (Muppet), named after the
    type; ``teacher_forced``: an encoder-decoder's decoder reads the labels (shifted) instead of the input;
    ``needs_seq2seq``: only an encoder-decoder model (BART) can train it."""

    shared_head = False
    teacher_forced = False
    needs_seq2seq = False

    def make_head(self, task: Task, hidden_size: int, dropout: float):
        """A new head (a torch module), or None: the family adds no parameters."""
        raise NotImplementedError

    def outputs(self, task: Task, head, states, seg):
        """The head's outputs for the rows ``seg.start:seg.end`` of ``states`` (``batch.States``)."""
        raise NotImplementedError

    def label_cost(self, task: Task, labels) -> float | None:
        """The cost of an uninformed prediction where only the training labels (numpy) can tell it: regression's
        variance (predicting the labels' mean costs exactly that). None: ``losses`` knows the cost."""
        return None

    def losses(self, task: Task, outputs, labels, mask=None, smoothing: float = 0.0, label_cost=None):
        """Per-example loss, unscaled, and the cost of an uninformed prediction of each example, which Muppet's
        scaling divides by so that such a prediction costs 1 on every task: log(n) for n possible outputs (a
        uniform prediction), ``label_cost`` for regression; None: not scaled. ``smoothing``: label smoothing,
        read by the generation family only (Muppet)."""
        raise NotImplementedError


class Scorer:
    """One split's evaluation: ``add`` each batch's outputs (numpy, or the generated texts where ``generates``),
    then ``result``. ``metrics``: the metrics computed for each type (a task's metric is one of them).
    ``validation`` and ``examples``: the tokenized split and its original examples (families whose data part
    keeps them), as the evaluation driver loaded them."""

    metrics: dict[str, tuple[str, ...]] = {}
    generates = False  # the driver generates text and decodes it, instead of running the heads
    padding: float | None = None  # the output value that marks no output (the driver accepts it as not a number)

    def __init__(self, task: Task, settings: dict, validation=None, examples=None):
        self.task, self.settings = task, settings
        self.validation, self.examples = validation, examples
        self.outputs: list = []
        self.labels: list = []

    def add(self, outputs, labels, lengths) -> None:
        """One batch: ``outputs`` of its rows, its ``labels`` (numpy), and the tokens of each row."""
        self.outputs.append(outputs)
        self.labels.append(labels)

    def result(self) -> dict[str, float]:
        return self.compute(self.task.type, np.concatenate(self.outputs), np.concatenate(self.labels))

    @classmethod
    def compute(cls, task_type: str, predictions, labels) -> dict[str, float]:
        """``metrics[task_type]`` from a whole split's predictions and labels."""
        raise NotImplementedError


@dataclass(frozen=True)
class Family:
    """One family: its name (in results and in tokenized splits) and its three parts."""

    name: str
    data: Data
    model: Model
    scorer: type[Scorer]
