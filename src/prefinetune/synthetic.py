"""The built-in task generator behind the embedded default and the controls (offline, seconds on a laptop).

Tasks live in a "world": a vocabulary of pseudo-words, each carrying a hidden vector in R^dims (centred over
the vocabulary). A sentence's latent is the sum of its words' vectors divided by the square root of its length.
A task reads the latent along one direction and turns the projection into its label. The direction is
either random (drawn from the task's seed) or, with ``reads``, the sum of the named dimensions (normalised),
so a task can be made to depend on exactly the dimensions it lists and on no other.

  classification   the score's quantiles over a large reference sample cut it into balanced classes, and a
                   few labels (``noise``) are redrawn at random; pair tasks read both sentences together
  regression       the score, standardised over the reference sample, plus Gaussian noise
  multiple_choice  a context and 2-5 short choices; the answer is the choice scoring highest along the
                   direction tilted (by half) towards the context's latent
  span             a question and a long passage; the answer is the run of ``span_length`` passage words
                   scoring highest along the direction tilted towards the question's latent
  summarization    a document of sentences; its summary is the document's marked words in order, the fifth of
                   the vocabulary scoring highest along the direction

Every task is solvable from the words alone, but a small dataset cannot learn many word vectors by itself. An
encoder pre-finetuned on tasks that read some dimensions has learnt the words' values along them; a target
that reads those dimensions gains, one that reads others does not. The embedded default and the controls
(``demo/controls/``) are built on that.

Everything is deterministic in the world's seed, the task's seed and the split.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

WORLD_SEED = 20210126  # the paper's arXiv date
DEFAULT_WORLD = {"seed": WORLD_SEED, "dims": 6, "words": 60}  # a task without a ``world`` lives here
SENTENCE_WORDS = (4, 12)  # words per sentence, both ends included
LABEL_NOISE = 0.05  # share of classification labels redrawn at random
REFERENCE_ROWS = 4000  # sentences (pairs) whose scores fix the class boundaries of a task


@functools.lru_cache(maxsize=8)
def _world(seed: int, dims: int, words: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    onsets, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c, v in itertools.product(onsets, vowels)]
    names: set[str] = set()
    while len(names) < words:
        names.add("".join(rng.choice(syllables, size=rng.integers(2, 4))))
    latents = rng.standard_normal((words, dims))
    latents -= latents.mean(axis=0)  # centred: a dimension says nothing about a sentence's length
    if dims < words:  # orthogonal over the vocabulary: no dimension predicts another, even in a finite world
        q, r = np.linalg.qr(latents)
        latents = q * np.sign(np.diag(r)) * np.sqrt(words)
    latents.setflags(write=False)
    return sorted(names), latents


def world_of(spec: dict | None = None) -> dict:
    """A generator entry's world (``seed``, ``dims``, ``words``), the default one filled in."""
    return {**DEFAULT_WORLD, **((spec or {}).get("world") or {})}


def vocabulary(world: dict | None = None) -> tuple[list[str], np.ndarray]:
    """A world's pseudo-words and their hidden vectors, shape (words, dims); the default world without one."""
    w = {**DEFAULT_WORLD, **(world or {})}
    return _world(int(w["seed"]), int(w["dims"]), int(w["words"]))


def direction(seed: int, world: dict | None = None, reads: list[int] | None = None) -> np.ndarray:
    """The unit vector a task reads: the sum of the dimensions ``reads``, else a random one from ``seed``."""
    w = {**DEFAULT_WORLD, **(world or {})}
    if reads is not None:
        bad = [d for d in reads if not 0 <= d < w["dims"]]
        if bad or not reads:
            raise ValueError(f"reads: dimensions {bad or reads} outside the world's 0..{w['dims'] - 1}")
        out = np.zeros(w["dims"])
        out[list(reads)] = 1.0
    else:
        out = np.random.default_rng([w["seed"], seed]).standard_normal(w["dims"])
    return out / np.linalg.norm(out)


def _sentences(rng: np.random.Generator, count: int, world: dict | None = None,
               length: tuple[int, int] = SENTENCE_WORDS) -> tuple[list[list[int]], np.ndarray]:
    """Random sentences (word ids) and their latents, shape (count, dims): the words' sum over sqrt(length)."""
    _, latents = vocabulary(world)
    lengths = rng.integers(length[0], length[1] + 1, size=count)
    flat = rng.integers(0, len(latents), size=int(lengths.sum()))
    ends = np.cumsum(lengths)
    ids = np.split(flat, ends[:-1])
    sums = np.add.reduceat(latents[flat], ends - lengths, axis=0)
    return [s.tolist() for s in ids], sums / np.sqrt(lengths)[:, None]


def _scores(rng, size: int, world: dict, length, w: np.ndarray, pair: bool):
    """Sentence ids (one or two lists) and the task's score of each row: ~ N(0, 1) for a unit direction."""
    ids_a, z_a = _sentences(rng, size, world, length)
    score = z_a @ w
    if not pair:
        return (ids_a,), score
    ids_b, z_b = _sentences(rng, size, world, length)
    return (ids_a, ids_b), (score + z_b @ w) / np.sqrt(2.0)


@functools.lru_cache(maxsize=256)
def _reference(world_key: tuple, seed: int, reads: tuple | None, pair: bool, length: tuple) -> np.ndarray:
    """The sorted scores of REFERENCE_ROWS rows drawn apart from every split (deterministic)."""
    world = dict(world_key)
    rng = np.random.default_rng([world["seed"], seed, 999_983])
    _, score = _scores(rng, REFERENCE_ROWS, world, length, direction(seed, world, reads), pair)
    return np.sort(score)


def _task(seed: int, split_index: int, world: dict | None, reads: list[int] | None):
    """What every generator starts from: the world (defaults filled in), its words and vectors, the task's direction,
    and the split's random generator."""
    world = {**DEFAULT_WORLD, **(world or {})}
    words, latents = vocabulary(world)
    return world, words, latents, direction(seed, world, reads), np.random.default_rng([world["seed"], seed, split_index])


def generate_split(seed: int, split_index: int, size: int, *, pair: bool, task_type: str, num_labels: int,
                   world: dict | None = None, reads: list[int] | None = None,
                   length: tuple[int, int] = SENTENCE_WORDS, noise: float = LABEL_NOISE) -> dict:
    """One split of a classification or regression task as columns: ``sentence`` or ``sentence1``/``sentence2``,
    and ``label``. Classes are balanced: their boundaries are the score's quantiles over a reference sample."""
    world, words, _, w, rng = _task(seed, split_index, world, reads)
    length = tuple(length)
    ids, score = _scores(rng, size, world, length, w, pair)
    text = lambda rows: [" ".join(words[i] for i in s) for s in rows]  # noqa: E731
    columns = {"sentence1": text(ids[0]), "sentence2": text(ids[1])} if pair else {"sentence": text(ids[0])}
    ref = _reference(tuple(sorted(world.items())), seed, None if reads is None else tuple(reads), pair, length)
    if task_type == "regression":
        standard = (score - ref.mean()) / ref.std()
        columns["label"] = (standard + rng.normal(0.0, 0.25, size)).astype(np.float32).tolist()
    else:
        cuts = np.quantile(ref, [i / num_labels for i in range(1, num_labels)])
        labels = np.searchsorted(cuts, score)
        flip = rng.random(size) < noise
        labels[flip] = rng.integers(0, num_labels, flip.sum())
        columns["label"] = labels.astype(np.int64).tolist()
    return columns


def generate_choices(seed: int, split_index: int, size: int, choices: list[int], world: dict | None = None,
                     reads: list[int] | None = None, length: tuple[int, int] = SENTENCE_WORDS,
                     noise: float = LABEL_NOISE) -> dict:
    """Multiple choice: ``context``, ``choices`` (a list of 2..5 sentences) and ``label`` (the answer's index)."""
    world, words, latents, w, rng = _task(seed, split_index, world, reads)
    ids, z = _sentences(rng, size, world, tuple(length))
    contexts, options, labels = [], [], []
    for row in range(size):
        n = int(rng.choice(choices))
        choice_ids = [rng.integers(0, len(words), size=rng.integers(2, 6)).tolist() for _ in range(n)]
        tilt = w + 0.5 * z[row] / np.linalg.norm(z[row])
        choice_z = np.stack([latents[c].sum(axis=0) / np.sqrt(len(c)) for c in choice_ids]) @ tilt
        label = int(np.argmax(choice_z))
        if rng.random() < noise:
            label = int(rng.integers(0, n))
        contexts.append(" ".join(words[i] for i in ids[row]))
        options.append([" ".join(words[i] for i in c) for c in choice_ids])
        labels.append(label)
    return {"context": contexts, "choices": options, "label": labels}


def generate_spans(seed: int, split_index: int, size: int, span_length: int, passage_words: list[int],
                   world: dict | None = None, reads: list[int] | None = None,
                   length: tuple[int, int] = SENTENCE_WORDS) -> dict:
    """Span extraction: ``question``, ``context`` (the passage) and SQuAD-style ``answers``."""
    world, words, latents, w, rng = _task(seed, split_index, world, reads)
    q_ids, q_z = _sentences(rng, size, world, tuple(length))
    questions, contexts, answers = [], [], []
    for row in range(size):
        tilt = w + q_z[row] / np.linalg.norm(q_z[row])
        passage = rng.integers(0, len(words), size=rng.integers(passage_words[0], passage_words[1] + 1))
        scores = np.convolve(latents[passage] @ tilt, np.ones(span_length), mode="valid")
        first = int(np.argmax(scores))
        text_words = [words[i] for i in passage]
        start = len(" ".join(text_words[:first])) + (1 if first else 0)
        questions.append(" ".join(words[i] for i in q_ids[row]))
        contexts.append(" ".join(text_words))
        answers.append({"text": [" ".join(text_words[first:first + span_length])], "answer_start": [start]})
    return {"question": questions, "context": contexts, "answers": answers}


def generate_summaries(seed: int, split_index: int, size: int, sentences: list[int], world: dict | None = None,
                       reads: list[int] | None = None, length: tuple[int, int] = SENTENCE_WORDS) -> dict:
    """Summarization: a ``document`` of several sentences and its ``summary``: the document's marked content
    words, in order. The marked words are the fifth of the vocabulary scoring highest along the task's direction,
    so a model must learn which words they are and copy them; the lead sentences hold only some of them."""
    world, words, latents, towards, rng = _task(seed, split_index, world, reads)
    scores = latents @ towards
    marked = scores >= np.quantile(scores, 0.8)
    documents, summaries = [], []
    for _ in range(size):
        ids, _ = _sentences(rng, int(rng.integers(sentences[0], sentences[1] + 1)), world, tuple(length))
        content = [w for sentence in ids for w in sentence if marked[w]] or [ids[0][0]]
        documents.append(" ".join(" ".join(words[i] for i in sentence) + "." for sentence in ids))
        summaries.append(" ".join(words[i] for i in content) + ".")
    return {"document": documents, "summary": summaries}


def generate(spec: dict, task_type: str, num_labels: int):
    """A ``datasets.DatasetDict`` with ``train`` and ``validation`` splits for a registry ``generator`` entry."""
    from datasets import Dataset, DatasetDict

    common = {"world": world_of(spec), "reads": spec.get("reads"), "length": tuple(spec.get("length", SENTENCE_WORDS))}
    noise = spec.get("noise", LABEL_NOISE)

    def split_columns(index: int, size: int) -> dict:
        if task_type == "multiple_choice":
            return generate_choices(spec["seed"], index, size, spec.get("choices", [num_labels]), noise=noise, **common)
        if task_type == "summarization":
            return generate_summaries(spec["seed"], index, size, spec.get("sentences", [4, 6]), **common)
        if task_type == "span":
            return generate_spans(spec["seed"], index, size, spec.get("span_length", 2),
                                  spec.get("passage_words", [30, 60]), **common)
        return generate_split(spec["seed"], index, size, pair=bool(spec.get("pair", False)), task_type=task_type,
                              num_labels=num_labels, noise=noise, **common)

    return DatasetDict({split: Dataset.from_dict(split_columns(i, spec[split]))
                        for i, split in enumerate(("train", "validation"))})
