"""From sampled (task, index) items to padded tensors, off the training loop's critical path.

- :class:`TaskArrays` reads a task's tokenized split once into flat numpy arrays (every row's tokens back
  to back, with row offsets), so :func:`collate` pads a batch with a few vectorised numpy operations
  instead of a Python loop over rows. This holds about 4 bytes per token of the task in memory.
- :func:`group_by_length` sorts the items of one update (all its micro-batches) by length before cutting
  them into micro-batches of the same sizes: the update keeps its examples, only their grouping into
  padded micro-batches changes. An example is one item: a multiple-choice question with all its choices, or
  one passage window.
- :class:`Prefetcher` draws and collates the next updates in a background thread (pinned memory on CUDA),
  while the GPU computes the current one. The sampler is only ever called in update order, so the batches
  are those of a loop without prefetching, and each update carries the sampler state after it (what a
  checkpoint saves).
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .batch import Segment
from .families import FAMILIES, family


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Offsets of consecutive runs of ``lengths``: [0, l0, l0 + l1, ...] (one more than the lengths)."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + l) for each (s, l), without a Python loop."""
    total = int(lengths.sum())
    return np.repeat(starts - _starts(lengths)[:-1], lengths) + np.arange(total, dtype=np.int64)


class TaskArrays:
    """One task's tokenized split as numpy arrays: tokens, row offsets, labels, and each example's length.

    ``fam``'s data part reads the labels; by default, the family whose name ``tokenize`` stored with the split.
    With ``null_rng`` (the null arm) the family destroys the labels' information (``Data.shuffled_labels``)."""

    def __init__(self, ds, fam=None, null_rng: np.random.Generator | None = None):
        if fam is None and ds.info.description not in FAMILIES:
            raise ValueError("a split that prefinetune.data.tokenize did not write (its info.description names no "
                             "task family): give TaskArrays its task's family")
        self.family = fam or FAMILIES[ds.info.description]
        table = ds.with_format("arrow")[:]  # honours a select() (fine-tuning on a fraction)
        ids = table.column("input_ids").combine_chunks()
        self.choices = None  # multiple choice: rows (choices) per example
        if pa.types.is_list(ids.type.value_type):
            self.choices = pc.list_value_length(ids).to_numpy().astype(np.int64)
            self.example_rows = _starts(self.choices)
            ids = pc.list_flatten(ids)
        self.row_lengths = pc.list_value_length(ids).to_numpy().astype(np.int64)
        self.row_starts = _starts(self.row_lengths)
        self.tokens = pc.list_flatten(ids).to_numpy()
        self.labels = self.family.data.read_labels(table)
        if null_rng is not None:
            self.labels = self.family.data.shuffled_labels(self.labels, table, null_rng)
        # tokens of each example's longest row: what it adds to the padded width of a micro-batch
        self.lengths = (self.row_lengths if self.choices is None
                        else np.maximum.reduceat(self.row_lengths, self.example_rows[:-1]))

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, examples: np.ndarray) -> np.ndarray:
        """Row numbers of ``examples``, in order (a multiple-choice example: all its choices)."""
        if self.choices is None:
            return examples
        return _ranges(self.example_rows[examples], self.choices[examples])


def task_arrays(data: dict, tasks: dict | None = None) -> dict[str, TaskArrays]:
    """Arrays of every task's split; ``tasks`` (name -> Task) gives their families, else the data does."""
    return {name: ds if isinstance(ds, TaskArrays) else TaskArrays(ds, family(tasks[name]) if tasks else None)
            for name, ds in data.items()}


def collate(arrays: dict[str, TaskArrays], batch: list[tuple[str, int]], pad_id: int) -> dict:
    """Rows of a (task, index) batch, grouped by task into :class:`Segment`s, padded to the longest row.

    CPU tensors; :func:`to_device` moves them. A multiple-choice example gives one row per choice; a span
    example is one passage window.
    """
    parts, segments, start = [], [], 0
    for task in dict.fromkeys(t for t, _ in batch):  # tasks in order of first appearance
        a = arrays[task]
        examples = np.array([i for t, i in batch if t == task], dtype=np.int64)
        rows = a.rows(examples)
        counts = None if a.choices is None else a.choices[examples].tolist()
        labels = torch.from_numpy(a.family.data.batch_labels(a.labels, examples))
        segments.append(Segment(task, start, start + len(rows), labels, counts))
        parts.append((a, rows))
        start += len(rows)
    lengths = np.concatenate([a.row_lengths[rows] for a, rows in parts])
    mask = np.arange(lengths.max()) < lengths[:, None]
    input_ids = np.full(mask.shape, pad_id, dtype=np.int64)
    input_ids[mask] = np.concatenate([a.tokens[_ranges(a.row_starts[rows], a.row_lengths[rows])] for a, rows in parts])
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "segments": segments}


def pin(inputs: dict) -> dict:
    """Page-locked copies of a batch's tensors, so that the copy to the GPU can run asynchronously."""
    segments = [Segment(s.task, s.start, s.end, s.labels.pin_memory(), s.choice_counts) for s in inputs["segments"]]
    return {"input_ids": inputs["input_ids"].pin_memory(), "attention_mask": inputs["attention_mask"].pin_memory(),
            "segments": segments}


def to_device(inputs: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return inputs
    segments = [Segment(s.task, s.start, s.end, s.labels.to(device, non_blocking=True), s.choice_counts)
                for s in inputs["segments"]]
    return {"input_ids": inputs["input_ids"].to(device, non_blocking=True),
            "attention_mask": inputs["attention_mask"].to(device, non_blocking=True), "segments": segments}


def group_by_length(batches: list[list[tuple[str, int]]], arrays: dict[str, TaskArrays]) -> list[list[tuple[str, int]]]:
    """The items of one update sorted by length (longest first, ties in drawn order), cut into micro-batches
    of the drawn sizes. The same examples, so the same summed loss; only the padding changes."""
    items = [item for batch in batches for item in batch]
    lengths = np.array([arrays[t].lengths[i] for t, i in items])
    ordered = [items[j] for j in np.argsort(-lengths, kind="stable")]
    cuts = np.cumsum([0, *map(len, batches)])
    return [ordered[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]


class Prefetcher:
    """Yields, for updates ``first..last``, (micro-batches as drawn, their collated shards, sampler state after
    the update), prepared ``depth`` updates ahead in a background thread.

    ``prepare(step)`` must draw the update's batches from the sampler (in step order) and return
    (batches, shards); exceptions in the thread are raised in the consumer.
    """

    def __init__(self, prepare, sampler, first: int, last: int, depth: int = 2, pin_memory: bool = False):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._args = (prepare, sampler, first, last, pin_memory)
        self._thread = threading.Thread(target=self._run, daemon=True, name="prefetch")

    def _run(self) -> None:
        prepare, sampler, first, last, pin_memory = self._args
        try:
            for step in range(first, last + 1):
                batches, shards = prepare(step)
                if pin_memory:
                    shards = [pin(s) for s in shards]
                if not self._put((step, batches, shards, sampler.state_dict())):
                    return
        except BaseException as error:  # handed to the training loop, which raises it
            self._put(error)

    def _put(self, item) -> bool:
        """Queue ``item``, waiting for room unless the consumer has stopped; False if it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> "Prefetcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item
