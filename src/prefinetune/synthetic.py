"""The built-in task generator behind the embedded default (offline, seconds on a laptop).

All tasks share one small "world": a vocabulary of pseudo-words, each carrying a hidden vector in R^d.
A sentence's latent is the (length-normalised) sum of its words' vectors; a task looks at the latent along
its own random direction w and turns the projection into a label (binary, n-class, or the noisy projection
itself for regression, a centred score). Sentence-pair tasks read both sentences together along w.

Multiple choice: a context sentence and 2-5 short choice sentences; the answer is the choice scoring
highest along w tilted (by half) towards the context's latent, so the context matters but w dominates. Span extraction: a question sentence and a long passage; the
answer is the run of ``span_length`` consecutive passage words scoring highest along w tilted towards
the question's latent, so the question matters and passages are long enough to need several windows.

Every task is solvable from the words alone, but a small target dataset cannot learn hundreds of word
vectors by itself. An encoder pre-finetuned on many tasks (many directions) has learnt them, so transfer
grows with the number of tasks: the structure the scaling study is about, made measurable in minutes.
"""

from __future__ import annotations

import functools
import itertools
from statistics import NormalDist

import numpy as np

WORLD_SEED = 20210126  # the paper's arXiv date; fixed so every task lives in the same world
LATENT_DIM = 3
VOCAB_SIZE = 50
LABEL_NOISE = 0.05


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[list[str], np.ndarray]:
    """The shared pseudo-words and their hidden vectors (deterministic)."""
    rng = np.random.default_rng(WORLD_SEED)
    onsets, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c, v in itertools.product(onsets, vowels)]
    words: set[str] = set()
    while len(words) < VOCAB_SIZE:
        n = rng.integers(2, 4)
        words.add("".join(rng.choice(syllables, size=n)))
    words_sorted = sorted(words)
    latents = rng.standard_normal((VOCAB_SIZE, LATENT_DIM))
    return words_sorted, latents


def _sentences(rng: np.random.Generator, count: int) -> tuple[list[list[int]], np.ndarray]:
    """Random sentences (word ids) and their standardised latent sums, shape (count, d)."""
    _, latents = vocabulary()
    ids = [rng.integers(0, VOCAB_SIZE, size=rng.integers(4, 13)).tolist() for _ in range(count)]
    z = np.stack([latents[s].sum(axis=0) / np.sqrt(len(s)) for s in ids])
    return ids, z


def generate_split(seed: int, split_index: int, size: int, *, pair: bool, task_type: str, num_labels: int) -> dict:
    """One split of one task as columns: ``sentence`` or ``sentence1``/``sentence2``, and ``label``."""
    words, _ = vocabulary()
    direction = _direction(seed)
    rng = np.random.default_rng([WORLD_SEED, seed, split_index])

    ids_a, z_a = _sentences(rng, size)
    score = z_a @ direction  # ~ N(0, 1)
    columns = {}
    if pair:
        ids_b, z_b = _sentences(rng, size)
        score = (score + z_b @ direction) / np.sqrt(2.0)
        columns["sentence1"] = [" ".join(words[i] for i in s) for s in ids_a]
        columns["sentence2"] = [" ".join(words[i] for i in s) for s in ids_b]
    else:
        columns["sentence"] = [" ".join(words[i] for i in s) for s in ids_a]

    if task_type == "regression":
        columns["label"] = (score + rng.normal(0.0, 0.25, size)).astype(np.float32).tolist()
    else:
        cuts = [NormalDist().inv_cdf(i / num_labels) for i in range(1, num_labels)]  # balanced classes
        labels = np.searchsorted(cuts, score)
        flip = rng.random(size) < LABEL_NOISE
        labels[flip] = rng.integers(0, num_labels, flip.sum())
        columns["label"] = labels.astype(np.int64).tolist()
    return columns


def _direction(seed: int) -> np.ndarray:
    direction = np.random.default_rng([WORLD_SEED, seed]).standard_normal(LATENT_DIM)
    return direction / np.linalg.norm(direction)


def generate_choices(seed: int, split_index: int, size: int, choices: list[int]) -> dict:
    """Multiple choice: ``context``, ``choices`` (a list of 2..5 sentences) and ``label`` (the answer's index)."""
    words, latents = vocabulary()
    direction = _direction(seed)
    rng = np.random.default_rng([WORLD_SEED, seed, split_index])
    ids, z = _sentences(rng, size)
    contexts, options, labels = [], [], []
    for row in range(size):
        n = int(rng.choice(choices))
        choice_ids = [rng.integers(0, VOCAB_SIZE, size=rng.integers(2, 6)).tolist() for _ in range(n)]
        tilt = direction + 0.5 * z[row] / np.linalg.norm(z[row])
        choice_z = np.stack([latents[c].sum(axis=0) / np.sqrt(len(c)) for c in choice_ids]) @ tilt
        label = int(np.argmax(choice_z))
        if rng.random() < LABEL_NOISE:
            label = int(rng.integers(0, n))
        contexts.append(" ".join(words[i] for i in ids[row]))
        options.append([" ".join(words[i] for i in c) for c in choice_ids])
        labels.append(label)
    return {"context": contexts, "choices": options, "label": labels}


def generate_spans(seed: int, split_index: int, size: int, span_length: int, passage_words: list[int]) -> dict:
    """Span extraction: ``question``, ``context`` (the passage) and SQuAD-style ``answers``."""
    words, latents = vocabulary()
    direction = _direction(seed)
    rng = np.random.default_rng([WORLD_SEED, seed, split_index])
    q_ids, q_z = _sentences(rng, size)
    questions, contexts, answers = [], [], []
    for row in range(size):
        tilt = direction + q_z[row] / np.linalg.norm(q_z[row])
        passage = rng.integers(0, VOCAB_SIZE, size=rng.integers(passage_words[0], passage_words[1] + 1))
        scores = np.convolve(latents[passage] @ tilt, np.ones(span_length), mode="valid")
        first = int(np.argmax(scores))
        text_words = [words[i] for i in passage]
        start = len(" ".join(text_words[:first])) + (1 if first else 0)
        questions.append(" ".join(words[i] for i in q_ids[row]))
        contexts.append(" ".join(text_words))
        answers.append({"text": [" ".join(text_words[first:first + span_length])], "answer_start": [start]})
    return {"question": questions, "context": contexts, "answers": answers}


def generate_summaries(seed: int, split_index: int, size: int, sentences: list[int]) -> dict:
    """Summarization: a ``document`` of several sentences and its ``summary``: the document's marked content
    words, in order. The marked words are the fifth of the vocabulary scoring highest along the task's direction,
    so a model must learn which words they are and copy them; the lead sentences hold only some of them."""
    words, latents = vocabulary()
    scores = latents @ _direction(seed)
    marked = scores >= np.quantile(scores, 0.8)
    rng = np.random.default_rng([WORLD_SEED, seed, split_index])
    documents, summaries = [], []
    for _ in range(size):
        ids, _ = _sentences(rng, int(rng.integers(sentences[0], sentences[1] + 1)))
        content = [w for sentence in ids for w in sentence if marked[w]] or [ids[0][0]]
        documents.append(" ".join(" ".join(words[i] for i in sentence) + "." for sentence in ids))
        summaries.append(" ".join(words[i] for i in content) + ".")
    return {"document": documents, "summary": summaries}


def generate(spec: dict, task_type: str, num_labels: int):
    """A ``datasets.DatasetDict`` with ``train`` and ``validation`` splits for a registry ``generator`` entry."""
    from datasets import Dataset, DatasetDict

    def split_columns(index: int, size: int) -> dict:
        if task_type == "multiple_choice":
            return generate_choices(spec["seed"], index, size, spec.get("choices", [num_labels]))
        if task_type == "summarization":
            return generate_summaries(spec["seed"], index, size, spec.get("sentences", [4, 6]))
        if task_type == "span":
            return generate_spans(spec["seed"], index, size, spec.get("span_length", 2),
                                  spec.get("passage_words", [30, 60]))
        return generate_split(spec["seed"], index, size, pair=bool(spec.get("pair", False)), task_type=task_type,
                              num_labels=num_labels)

    return DatasetDict({split: Dataset.from_dict(split_columns(i, spec[split]))
                        for i, split in enumerate(("train", "validation"))})
