"""The interface every task family implements (see ``prefinetune.families``)."""

from __future__ import annotations

from pathlib import Path

from ..tasks import Task

IGNORE_INDEX = -100  # label padding of token targets (summaries): no loss


class Family:
    """The defaults a family overrides. ``name`` is the family's name in results; ``types`` the registry types."""

    name: str = ""
    types: tuple[str, ...] = ()
    metrics: dict[str, tuple[str, ...]] = {}  # metrics computed for each type; a task's metric must be one of them
    label_maps: tuple[str, ...] = ()  # types whose raw labels a registry label_map may map to indices
    reads_choices: bool = False  # the entry names choice columns (and must)
    shared_head: bool = False  # one head for every dataset of the type (Muppet), named after the type
    with_indices: bool = False  # the tokenize map function takes row indices
    keeps_examples: bool = False  # the tokenized copy keeps the validation split's examples (for evaluation)
    teacher_forced: bool = False  # an encoder-decoder's decoder reads the labels (shifted) instead of the input
    needs_seq2seq: bool = False  # only an encoder-decoder model (BART) can train it

    # -- registry ---------------------------------------------------------------------------------------------------
    def check_entry(self, task: Task, fail) -> None:
        """Registry checks of this family; ``fail(field, message)`` stops with one line."""

    def input_columns(self, task: Task) -> list[str]:
        """The source columns an entry reads."""
        return list(dict.fromkeys([*task.text, task.label]))

    # -- download ---------------------------------------------------------------------------------------------------
    def prepare(self, raw, task: Task) -> Task:
        """The task with what only the data can say (e.g. a label map read from the training split)."""
        return task

    def layout(self, ds, task: Task, where: str, file: Path | None):
        """One split (only ``input_columns``, at least one row) checked and in the family's layout; ``where``
        names the split for messages, ``file`` is its local file if it has one."""
        raise NotImplementedError

    # -- tokenize ---------------------------------------------------------------------------------------------------
    def encoder(self, task: Task, tokenizer, lengths: dict):
        """A batched map function: layout rows -> ``input_ids`` and labels. ``lengths``: max_length, doc_stride."""
        raise NotImplementedError

    # -- collate ----------------------------------------------------------------------------------------------------
    def read_labels(self, table):
        """Per-example labels of a tokenized split (an Arrow table) as a numpy array."""
        return table.column("label").to_numpy().astype("float32")

    def batch_labels(self, labels, examples):
        """The label tensor of a batch's ``examples`` (indices into ``read_labels``' array)."""
        import torch

        return torch.from_numpy(labels[examples])

    # -- model ------------------------------------------------------------------------------------------------------
    def make_head(self, task: Task, hidden_size: int, dropout: float):
        raise NotImplementedError

    def outputs(self, task: Task, head, states, seg):
        """The head's outputs for the rows ``seg.start:seg.end`` of ``states`` (see ``heads.States``)."""
        raise NotImplementedError

    def losses(self, task: Task, outputs, labels, mask=None, smoothing: float = 0.0):
        """Per-example loss, unscaled, and n, the number of possible outputs of each example (1 / log(n) scaling;
        None: not scaled). ``smoothing``: label smoothing, read by the generation family only (Muppet)."""
        raise NotImplementedError

    # -- evaluation -------------------------------------------------------------------------------------------------
    def evaluate(self, model, task: Task, tokenized: str, pad_id: int, settings: dict, precision: str,
                 model_dir: str | None = None) -> dict:
        """The metrics of ``metrics[task.type]`` on the tokenized validation split; ``model_dir`` holds the
        model's tokenizer (for families that decode text)."""
        raise NotImplementedError

    def compute_metrics(self, task_type: str, predictions, labels) -> dict[str, float]:
        """``metrics[task_type]`` from what ``evaluate`` collected."""
        raise NotImplementedError
