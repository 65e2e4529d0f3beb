"""Summarization (CNN/DailyMail, XSum, ...): BART's own decoder and LM head, no new parameters (Muppet).

Layout: ``document`` and ``summary`` (str, the summary not empty). Tokenized as the document's ids (truncated
to max_length) and the summary's ids as ``labels`` (truncated to the config's max_target_length, which the
experiment sets on every summarization task). Training is teacher forcing: the decoder reads the summary
shifted right (``heads.MultiTaskModel``), in the same encoder-decoder pass as the other families' rows. The
loss is the label-smoothed cross-entropy of each summary token (PyTorch's ``label_smoothing``,
``label_smoothing`` in the config), averaged over the summary's tokens, and scaled by 1 / log(vocabulary size):
a uniform prediction costs 1, as on every other task. The evaluation driver (``evaluation.py``) generates with
beam search (the registry's ``generation`` settings of the dataset); the scorer computes ROUGE-1/2/L with
Google's ``rouge-score`` and Porter stemming (as BART did), and ROUGE-Lsum on the texts split into sentences
(one per line, at the newlines the data has and after ., ! and ?). The metrics also report the lead baseline,
the first three sentences of each document (``lead_*``).
"""

from __future__ import annotations

import re

import numpy as np

from ..batch import IGNORE_INDEX
from ..checks import check_text
from ..metrics import rouge
from .base import Data, Family, Model, Scorer

ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")
LEAD_SENTENCES = 3  # the lead baseline: LEAD-3, the standard news baseline


class SummarizationData(Data):
    keeps_examples = True  # scoring compares the generated text with these summaries

    def check_entry(self, task, fail):
        if task.num_labels:
            fail("num_labels", "summarization tasks have none (the vocabulary is the output)")
        if len(task.text) != 1:
            fail("text", "summarization tasks name one column: [document]")

    def layout(self, ds, task, where, file):
        check_text(ds, [task.label], where, "summary")
        return ds.map(lambda row: {"document": row[task.text[0]], "summary": row[task.label]},
                      remove_columns=ds.column_names, desc="summaries")

    def encoder(self, task, tokenizer, lengths):
        def encode(batch):
            ids = tokenizer(batch["document"], truncation=True, max_length=lengths["max_length"])["input_ids"]
            labels = tokenizer(text_target=batch["summary"], truncation=True,
                               max_length=task.max_target_length)["input_ids"]
            return {"input_ids": ids, "labels": labels}

        return encode

    def read_labels(self, table):  # every example's summary ids: a list of arrays
        import pyarrow.compute as pc

        labels = table.column("labels").combine_chunks()
        tokens = pc.list_flatten(labels).to_numpy().astype(np.int64)
        return np.split(tokens, np.cumsum(pc.list_value_length(labels).to_numpy())[:-1])

    def shuffled_labels(self, labels, table, rng):
        """The summaries permuted across the examples: each document trains on another document's summary."""
        return [labels[i] for i in rng.permutation(len(labels))]

    def batch_labels(self, labels, examples):
        """(examples, longest summary), padded with -100 (no loss)."""
        rows = [labels[i] for i in examples]
        out = np.full((len(rows), max(map(len, rows))), IGNORE_INDEX, dtype=np.int64)
        for r, ids in enumerate(rows):
            out[r, : len(ids)] = ids
        return out


class SummarizationModel(Model):
    shared_head = True  # nothing is added: every summarization task trains the model's own LM head
    teacher_forced = True
    needs_seq2seq = True

    def make_head(self, task, hidden_size, dropout):
        return None

    def outputs(self, task, head, states, seg):
        """(rows, summary tokens, vocabulary) logits: the LM head on the decoder states the loss reads only."""
        width = seg.labels.shape[1] if seg.labels is not None else states.decoder.shape[1]
        return states.lm_logits(states.decoder[seg.start:seg.end, :width])

    def losses(self, task, outputs, labels, mask=None, smoothing=0.0, label_cost=None):
        from .layers import cross_entropy

        logits = outputs[:, : labels.shape[1]]
        tokens = cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, label_smoothing=smoothing)
        counted = (labels != IGNORE_INDEX).sum(-1)
        loss = tokens.sum(-1) / counted.clamp(min=1)
        return loss, loss.new_full(loss.shape, outputs.shape[-1]).log()  # log(vocabulary size)


class SummarizationScorer(Scorer):
    """The generated summaries against the references; also the lead baseline (``lead_*``) of the documents."""

    metrics = {"summarization": ROUGE}
    generates = True

    def add(self, outputs, labels, lengths):
        self.outputs.extend(outputs)  # generated texts

    def result(self):
        references, documents = self.examples["summary"], self.examples["document"]
        metrics = self.compute(self.task.type, self.outputs, references)
        lead = self.compute(self.task.type, [lead_text(d) for d in documents], references)
        return {**metrics, **{f"lead_{name}": value for name, value in lead.items()}}

    @classmethod
    def compute(cls, task_type, predictions, labels):
        return rouge(predictions, labels, [sentences(p) for p in predictions], [sentences(g) for g in labels])


FAMILY = Family("summarization", SummarizationData(), SummarizationModel(), SummarizationScorer)


def sentences(text: str) -> str:
    """One sentence per line (ROUGE-Lsum's input): the text's own line breaks, and a break after ., ! and ?."""
    return "\n".join(s for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s)


def lead_text(document: str) -> str:
    """The lead baseline: the document's first LEAD_SENTENCES sentences."""
    return " ".join(sentences(document).splitlines()[:LEAD_SENTENCES])
