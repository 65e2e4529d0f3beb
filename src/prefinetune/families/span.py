"""Span extraction (SQuAD, the MRQA sets): one head shared by all such datasets (Muppet).

Layout: ``question``, ``context`` (the passage) and ``answers`` ({text: [...], answer_start: [...]}, SQuAD's;
MRQA's detected_answers are turned into it), every answer the passage's text at its offset. Tokenized as one
row per window of the passage (``prefinetune.spans``: the passage loses nothing; a question longer than
(max_length - doc_stride) / 2 tokens loses its end). The shared head gives a start and an end logit per token
(BART: per decoder state, as ``BartForQuestionAnswering``); the loss is the mean of the start and end
cross-entropies over the window's tokens, scaled by 1 / log(tokens). Evaluation maps the best span over an
example's windows back to the passage's text and scores it like SQuAD's script (exact match, token F1).
"""

from __future__ import annotations

import numpy as np

from ..checks import check_not_null
from ..metrics import normalize_answer, span_metrics
from ..spans import best_answers, windows
from ..tasks import ConfigError, Task
from .base import Data, Family, Model, Scorer


class SpanData(Data):
    with_indices = True
    keeps_examples = True  # scoring maps predicted windows back to these passages and gold answers

    def check_entry(self, task, fail):
        if task.num_labels:
            fail("num_labels", "span tasks have none (the positions of the passage are the outputs)")
        if len(task.text) != 2:
            fail("text", "span tasks name two columns: [question, passage]")

    def layout(self, ds, task, where, file):
        check_not_null(ds, task.label, where)
        ds = ds.map(lambda row, i: span_row(row, task, f"{where}: row {i + 1}"), with_indices=True,
                    remove_columns=ds.column_names, desc="answers")
        if task.answer_format == "mrqa":
            report_mrqa_differences(ds, where)
            ds = ds.remove_columns("text_differs")
        return ds

    def encoder(self, task, tokenizer, lengths):
        return windows(tokenizer, lengths["max_length"], lengths["doc_stride"])

    def read_labels(self, table):  # (examples, 2): start and end token of each window
        return np.stack([table.column(c).to_numpy() for c in ("start_positions", "end_positions")], 1).astype(np.int64)

    def shuffled_labels(self, labels, table, rng):
        """A window that holds the answer gets a span of the same length at a random position of its own passage
        tokens; a window without it keeps its (0, 0)."""
        import pyarrow.compute as pc

        offsets = table.column("offsets").combine_chunks()  # per window, per token: (start, end), (-1, -1) outside
        tokens = pc.list_value_length(offsets).to_numpy().astype(np.int64)
        inside = pc.list_flatten(pc.list_flatten(offsets)).to_numpy()[::2] != -1
        starts = np.concatenate([[0], np.cumsum(tokens)[:-1]])
        position = np.arange(len(inside)) - np.repeat(starts, tokens)
        first = np.minimum.reduceat(np.where(inside, position, np.iinfo(np.int64).max), starts)  # the passage's first
        passage = np.add.reduceat(inside.astype(np.int64), starts)  # ... and its length: the passage is contiguous
        out = labels.copy()
        answered = (labels != 0).any(1)
        length = labels[answered, 1] - labels[answered, 0]  # tokens after the first
        out[answered, 0] = first[answered] + rng.integers(0, passage[answered] - length)
        out[answered, 1] = out[answered, 0] + length
        return out


class SpanModel(Model):
    shared_head = True

    def make_head(self, task, hidden_size, dropout):
        from .layers import SpanHead

        return SpanHead(hidden_size, dropout)

    def outputs(self, task, head, states, seg):
        return head(states.hidden[seg.start:seg.end])

    def losses(self, task, outputs, labels, mask=None, smoothing=0.0, label_cost=None):
        from .layers import cross_entropy

        mask = mask.bool()
        logits = outputs.float().masked_fill(~mask.unsqueeze(-1), float("-inf"))
        loss = (cross_entropy(logits[..., 0], labels[:, 0]) + cross_entropy(logits[..., 1], labels[:, 1])) / 2
        return loss, mask.sum(-1).float().log()  # log(the window's tokens)


class SpanScorer(Scorer):
    """Each window's start and end logits over its tokens; the best span of each example over its windows, mapped
    back to the passage's text, scored against the gold answers."""

    metrics = {"span": ("exact_match", "f1")}

    def add(self, outputs, labels, lengths):
        self.outputs.extend(o[:n] for o, n in zip(outputs, lengths))  # per window, trimmed to its tokens

    def result(self):
        golds = [a["text"] for a in self.examples["answers"]]
        allow_null = any(not g for g in golds)  # a dataset with unanswerable questions (SQuAD v2 style)
        predictions = best_answers([o[:, 0] for o in self.outputs], [o[:, 1] for o in self.outputs],
                                   self.validation["offsets"], self.validation["example"], self.examples["context"],
                                   self.settings["max_answer_tokens"], allow_null)
        return self.compute("span", predictions, golds)

    @classmethod
    def compute(cls, task_type, predictions, labels):
        return span_metrics(predictions, labels)


FAMILY = Family("span", SpanData(), SpanModel(), SpanScorer)


def span_row(row: dict, task: Task, where: str) -> dict:
    """One span row in SQuAD's layout; every answer must be the passage's text at its start offset."""
    question, context = (row[c] for c in task.text)
    answers = row[task.label]
    differs = 0
    if task.answer_format == "mrqa":  # detected_answers: {text, char_spans: [{start: [..], end: [..]}]}, inclusive ends
        spans = [(s["start"][0], s["end"][0] + 1) for s in answers["char_spans"]]
        for a, b in spans:
            if not 0 <= a < b <= len(context):
                raise ConfigError(f"{where}: answer span {a}..{b - 1} lies outside the passage ({len(context)} characters)")
        # MRQA's text is a normalised string; the span is what MRQA located in the passage, so the span's text is
        # the answer. Rows whose two strings differ even after SQuAD's normalisation are counted and reported.
        differs = int(any(normalize_answer(context[a:b]) != normalize_answer(text)
                          for (a, b), text in zip(spans, answers["text"])))
        answers = {"text": [context[a:b] for a, b in spans], "answer_start": [a for a, _ in spans]}
    texts, starts = list(answers["text"]), list(answers["answer_start"])
    if len(texts) != len(starts):
        raise ConfigError(f"{where}: answers have {len(texts)} texts but {len(starts)} starts")
    for text, start in zip(texts, starts):
        if context[start:start + len(text)] != text:
            raise ConfigError(f"{where}: answer {text!r} is not the passage's text at offset {start}")
    row = {"question": question, "context": context, "answers": {"text": texts, "answer_start": starts}}
    return {**row, "text_differs": differs} if task.answer_format == "mrqa" else row


def report_mrqa_differences(ds, where: str) -> None:
    """One line in the download log: how many rows' MRQA answer text differs from the passage's text at its span."""
    flags = ds["text_differs"]
    rows = [i + 1 for i, f in enumerate(flags) if f]
    if rows:
        print(f"{where}: {len(rows)} of {len(flags)} rows have an MRQA answer text that differs from the passage's "
              f"text at its span after normalisation (the span's text is used); first rows: {rows[:5]}")
