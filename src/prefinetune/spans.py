"""Span extraction: long passages as strided token windows, and predicted windows back to answer text.

Each (question, passage) example becomes one row per window of at most ``max_length`` tokens (questions
are cut to half of what the stride leaves); windows overlap by ``doc_stride`` tokens so an answer cut by one window's edge lies whole inside the next. A
window's label is the token positions of the first gold answer when the answer lies wholly inside it, and
(0, 0), the first token, otherwise (also for unanswerable questions), as in BERT's SQuAD recipe.

Every window keeps the character offsets of its passage tokens, so a predicted (start, end) pair maps back
to the exact text of the original passage; an example's answer is its best-scoring span over all windows.
"""

from __future__ import annotations

import numpy as np

NO_OFFSET = (-1, -1)  # tokens outside the passage (question, special tokens)


def windows(tokenizer, max_length: int, doc_stride: int):
    """A batched ``datasets.map`` function (``with_indices``): examples -> window rows with their labels."""
    if not tokenizer.is_fast:
        raise ValueError("span extraction needs a fast tokenizer (character offsets)")
    if doc_stride >= max_length:
        raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_length ({max_length})")

    max_question = (max_length - doc_stride) // 2  # leaves every window more passage tokens than the stride

    def encode(batch, indices):
        questions = [clip(tokenizer, q, max_question) for q in batch["question"]]
        enc = tokenizer(questions, batch["context"], truncation="only_second", max_length=max_length,
                        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        rows = {"input_ids": [], "start_positions": [], "end_positions": [], "offsets": [], "example": []}
        for w, offsets in enumerate(enc["offset_mapping"]):
            i = enc["overflow_to_sample_mapping"][w]
            sequence = enc.sequence_ids(w)
            offsets = [tuple(o) if s == 1 else NO_OFFSET for o, s in zip(offsets, sequence)]
            answers = batch["answers"][i]
            start = end = 0
            if answers["text"]:
                first = answers["answer_start"][0]
                start, end = token_span(offsets, first, first + len(answers["text"][0]))
            rows["input_ids"].append(enc["input_ids"][w])
            rows["start_positions"].append(start)
            rows["end_positions"].append(end)
            rows["offsets"].append(offsets)
            rows["example"].append(indices[i])
        return rows

    return encode


def clip(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut after its first ``max_tokens`` tokens (long questions would leave no room for the passage)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]


def token_span(offsets, char_start: int, char_end: int) -> tuple[int, int]:
    """First and last token covering characters [char_start, char_end), or (0, 0) when not wholly inside."""
    inside = [t for t, (a, b) in enumerate(offsets) if (a, b) != NO_OFFSET]
    if not inside or offsets[inside[0]][0] > char_start or offsets[inside[-1]][1] < char_end:
        return 0, 0
    start = next(t for t in inside if offsets[t][1] > char_start)
    end = next(t for t in reversed(inside) if offsets[t][0] < char_end)
    return start, end


def best_answers(start_logits, end_logits, offsets, examples, contexts: list[str], max_answer_tokens: int,
                 allow_null: bool) -> list[str]:
    """The predicted text of every example: the best (start <= end) span over all of its windows.

    ``start_logits``/``end_logits`` are per window (padded positions may be anything; only passage tokens
    are candidates). With ``allow_null`` (datasets with unanswerable questions) an example whose best
    window-level null score (first token as start and end) beats every span is answered with "".
    """
    best = {i: (-np.inf, "") for i in range(len(contexts))}
    null = {i: -np.inf for i in range(len(contexts))}
    for s_log, e_log, offs, i in zip(start_logits, end_logits, offsets, examples):
        inside = np.array([tuple(o) != NO_OFFSET for o in offs])
        n = len(offs)
        s_log, e_log = np.asarray(s_log[:n], dtype=float), np.asarray(e_log[:n], dtype=float)
        null[i] = max(null[i], s_log[0] + e_log[0])
        scores = s_log[:, None] + e_log[None, :]
        valid = inside[:, None] & inside[None, :] & np.triu(np.ones((n, n), bool)) & ~np.triu(np.ones((n, n), bool), max_answer_tokens)
        if not valid.any():
            continue
        scores = np.where(valid, scores, -np.inf)
        s, e = np.unravel_index(np.argmax(scores), scores.shape)
        if scores[s, e] > best[i][0]:
            best[i] = (scores[s, e], contexts[i][offs[s][0]:offs[e][1]])
    return [("" if allow_null and null[i] > best[i][0] else best[i][1]) for i in range(len(contexts))]
