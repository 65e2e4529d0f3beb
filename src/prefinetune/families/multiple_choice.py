"""Multiple choice (commonsense QA, RACE, ...): one head shared by all such datasets (Muppet).

Layout: ``context`` (the passage, str), ``question`` (str, "" when the entry names one text column),
``choices`` (list of str) and ``label`` (the answer's index). Each choice becomes one row (passage, question +
choice), tokenized with ``only_first``: only the passage loses its end, the question and the choice are kept
whole (RACE's articles exceed max_length). The shared head scores each row from its pooled state; the loss is
the cross-entropy of a softmax over the example's own choices (their number may differ per example), scaled
by 1 / log(choices).
"""

from __future__ import annotations

import numpy as np

from ..checks import check_not_null, check_text, map_label
from ..metrics import choice_accuracy
from ..spans import clip
from ..tasks import ConfigError, Task
from .base import Data, Family, Model, Scorer


class MultipleChoiceData(Data):
    label_maps = ("multiple_choice",)
    reads_choices = True

    def check_entry(self, task, fail):
        if task.num_labels < 2:
            fail("num_labels", "multiple_choice tasks need at least 2 (classes or choices)")

    def input_columns(self, task):
        return list(dict.fromkeys([*task.text, *(c.split(".")[0] for c in task.choices), task.label]))

    def layout(self, ds, task, where, file):
        if len(task.choices) > 1:
            check_text(ds, task.choices, where)
        check_not_null(ds, task.label, where)
        return ds.map(lambda row, i: choice_row(row, task, f"{where}: row {i + 1}"), with_indices=True,
                      remove_columns=ds.column_names, desc="choices")

    def encoder(self, task, tokenizer, lengths):
        max_length = lengths["max_length"]
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - 1  # >= 1 passage token stays

        def encode(batch):  # (passage, question + choice), cutting only the passage: only_first
            ids = []
            for passage, question, choices in zip(batch["context"], batch["question"], batch["choices"]):
                endings = [clip(tokenizer, f"{question} {c}" if question else c, room) for c in choices]
                ids.append(tokenizer([passage] * len(endings), endings, truncation="only_first",
                                     max_length=max_length)["input_ids"])
            return {"input_ids": ids, "label": batch["label"]}

        return encode

    def read_labels(self, table):
        return table.column("label").to_numpy().astype(np.int64)

    def shuffled_labels(self, labels, table, rng):
        """Answers permuted across the examples; one beyond its new example's choices wraps round (modulo them)."""
        import pyarrow.compute as pc

        choices = pc.list_value_length(table.column("input_ids").combine_chunks()).to_numpy()
        return labels[rng.permutation(len(labels))] % choices


class MultipleChoiceModel(Model):
    shared_head = True

    def make_head(self, task, hidden_size, dropout):
        from .layers import ClassificationHead

        return ClassificationHead(hidden_size, 1, dropout)

    def outputs(self, task, head, states, seg):
        return choice_scores(head(states.pooled[seg.start:seg.end]).squeeze(-1), seg.choice_counts)

    def losses(self, task, outputs, labels, mask=None, smoothing=0.0, label_cost=None):
        from .layers import cross_entropy

        return cross_entropy(outputs, labels), outputs.isfinite().sum(-1).float().log()  # log(the example's choices)


class MultipleChoiceScorer(Scorer):
    metrics = {"multiple_choice": ("accuracy",)}
    padding = -np.inf  # a choice the row does not have (choice_scores)

    def result(self):
        width = max(o.shape[1] for o in self.outputs)  # batches may differ in their most choices: pad to the widest
        outputs = [np.pad(o, ((0, 0), (0, width - o.shape[1])), constant_values=-np.inf) for o in self.outputs]
        return self.compute(self.task.type, np.concatenate(outputs), np.concatenate(self.labels))

    @classmethod
    def compute(cls, task_type, predictions, labels):
        return choice_accuracy(predictions, labels)


FAMILY = Family("multiple_choice", MultipleChoiceData(), MultipleChoiceModel(), MultipleChoiceScorer)


def choice_scores(scores, counts: list[int]):
    """Flat per-choice scores (a tensor) -> (examples, most choices), -inf where an example has fewer choices."""
    out = scores.new_full((len(counts), max(counts)), float("-inf"))
    for j, chunk in enumerate(scores.split(counts)):
        out[j, : len(chunk)] = chunk
    return out


def choice_row(row: dict, task: Task, where: str) -> dict:
    """One multiple-choice row: the context (columns joined by a space), its choices and the answer's index."""
    if len(task.choices) == 1:
        column, *keys = task.choices[0].split(".")
        choices = row[column]
        for key in keys:
            choices = choices[key]
    else:
        choices = [row[c] for c in task.choices]
    if choices is None or any(not isinstance(c, str) for c in choices):
        raise ConfigError(f"{where}: column '{task.choices[0] if len(task.choices) == 1 else ', '.join(task.choices)}': "
                          f"a choice that is null or not text ({choices!r})")
    label = row[task.label] if task.label_map is None else map_label(row[task.label], task, where)
    if not 2 <= len(choices) <= task.num_labels:
        raise ConfigError(f"{where}: a row has {len(choices)} choices; {task.name}.num_labels allows 2..{task.num_labels}")
    if isinstance(label, str):
        raise ConfigError(f"{where}: column '{task.label}': label {label!r} is text; give {task.name} a label_map")
    if not isinstance(label, int) or not 0 <= label < len(choices):
        raise ConfigError(f"{where}: label {label!r} out of range 0..{len(choices) - 1} (the row's choices)")
    context, question = (str(row[c]) for c in task.text) if len(task.text) == 2 else (str(row[task.text[0]]), "")
    return {"context": context, "question": question, "choices": [str(c) for c in choices], "label": label}
