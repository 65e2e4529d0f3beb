"""Getting datasets onto disk once, checking them, and tokenizing them once per tokenizer.

``download`` turns any registry source into an on-disk ``DatasetDict`` holding exactly the splits the
experiment uses (renamed to ``train``/``validation``), in one layout per task type:

  classification, regression   the text column(s) and ``label`` as the registry names them
  multiple_choice              ``context`` (the passage, str), ``question`` (str, "" when the entry names one
                               text column), ``choices`` (list of str), ``label`` (index of the answer)
  span                         ``question``, ``context``, ``answers`` ({text: [...], answer_start: [...]})

``tokenize`` stores ``input_ids`` per row, truncated, unpadded (batches are padded dynamically): one
sequence for a sentence (pair), one per choice for multiple choice, and one row per passage window for
span extraction (see :mod:`prefinetune.spans`). Both are memory-mapped Arrow on disk, shared by every
subset and fine-tuning run. What truncation may cut:
  sentence (pair)              the longer of the two sentences, from its end (``longest_first``)
  multiple_choice              only the passage, from its end: each row is (passage, question + choice) and
                               the question and the choice are kept whole (RACE's articles exceed max_length)
  span                         nothing of the passage (it is cut into overlapping windows); a question longer
                               than (max_length - doc_stride) / 2 tokens loses its end
"""

from __future__ import annotations

from pathlib import Path

from .evaluation import normalize_answer
from .io import atomic_path
from .tasks import ConfigError, Task

SPLITS = ("train", "validation")
FILE_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}


def load_source(task: Task, repo: str | Path = "."):
    """Load a task's data through ``datasets.load_dataset`` (hub or local files) or the built-in generator."""
    import datasets

    src = task.source
    if "generator" in src:
        from .synthetic import generate

        return generate(src["generator"], task.type, task.num_labels)
    if "files" in src:
        splits = {}
        for split, name in src["files"].items():
            path = Path(repo) / name
            if not path.is_file():
                raise ConfigError(f"task {task.name}: data file not found: {path}")
            builder = FILE_BUILDERS.get(path.suffix.lstrip("."))
            if builder is None:
                raise ConfigError(f"task {task.name}: source.files.{split}: unsupported file type '{path.suffix}'")
            kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
            splits[split] = datasets.load_dataset(builder, data_files={split: str(path)}, split=split, **kwargs)
        return apply_filter(used_splits(datasets.DatasetDict(splits), task), task)
    raw = datasets.load_dataset(src["hub"], src.get("config"), revision=src.get("revision"))
    return apply_filter(used_splits(raw, task), task)


def used_splits(raw, task: Task):
    """The splits the task reads, under their source names (other splits, e.g. an unlabelled test, are dropped)."""
    from datasets import DatasetDict

    names = list(dict.fromkeys(task.splits[canonical] for canonical in SPLITS))
    for name in names:
        if name not in raw:
            raise ConfigError(f"task {task.name}: split '{name}' not found (has {sorted(raw)})")
    return DatasetDict({name: raw[name] for name in names})


def apply_filter(raw, task: Task):
    """``source.filter``: keep the rows whose columns equal the given values (e.g. one source of MRQA). Applied to
    the used splits only: MRQA's test split holds other sources, and is no reason to stop."""
    for column, value in task.source.get("filter", {}).items():
        for split, ds in raw.items():
            if column not in ds.column_names:
                raise ConfigError(f"task {task.name}: source.filter: split '{split}' has no column '{column}'")
        raw = raw.filter(lambda rows: [v == value for v in rows[column]], batched=True, desc=f"filter {column}")
        empty = [split for split, ds in raw.items() if len(ds) == 0]
        if empty:
            raise ConfigError(f"task {task.name}: source.filter: no row of split(s) {empty} has {column} == {value!r}")
    return raw


def input_columns(task: Task) -> list[str]:
    """The source columns an entry reads (the first part of a dotted ``choices`` path)."""
    return list(dict.fromkeys([*task.text, *(c.split(".")[0] for c in task.choices), task.label]))


def select_splits(raw, task: Task):
    """The experiment's two splits under their canonical names, checked and in the task type's layout."""
    from datasets import DatasetDict, Value

    out = {}
    for canonical in SPLITS:
        name = task.splits[canonical]
        if name not in raw:
            raise ConfigError(f"task {task.name}: split '{name}' not found (has {sorted(raw)})")
        ds = raw[name]
        for column in input_columns(task):
            if column not in ds.column_names:
                raise ConfigError(f"task {task.name}: split '{name}' has no column '{column}' (has {ds.column_names})")
        ds = ds.select_columns(input_columns(task))
        where = f"task {task.name}: split '{name}'"
        row_of = "row {} (after source.filter)" if task.source.get("filter") else "row {}"
        if task.type == "multiple_choice":
            ds = ds.map(lambda row, i: choice_row(row, task, f"{where}, {row_of.format(i)}"), with_indices=True,
                        remove_columns=ds.column_names, desc="choices")
        elif task.type == "span":
            ds = ds.map(lambda row, i: span_row(row, task, f"{where}, {row_of.format(i)}"), with_indices=True,
                        remove_columns=ds.column_names, desc="answers")
            if task.answer_format == "mrqa":
                report_mrqa_differences(ds, where, bool(task.source.get("filter")))
                ds = ds.remove_columns("text_differs")
        else:
            if task.label_map is not None:
                features = ds.features.copy()
                features[task.label] = Value("int64")
                ds = ds.map(lambda rows: {task.label: [map_label(y, task, where) for y in rows[task.label]]},
                            batched=True, features=features, desc="labels")
            check_labels(ds[task.label], task, name)
        out[canonical] = ds
    return DatasetDict(out)


def map_label(value, task: Task, where: str) -> int:
    mapping = {str(k): v for k, v in task.label_map.items()}
    if str(value) not in mapping:
        raise ConfigError(f"{where}: label {value!r} is not in {task.name}.label_map {sorted(mapping)}")
    return mapping[str(value)]


def check_labels(labels, task: Task, split: str) -> None:
    if task.type == "regression":
        return
    bad = [y for y in labels if not isinstance(y, int) or not 0 <= y < task.num_labels]
    if bad:
        raise ConfigError(f"task {task.name}: split '{split}': label {bad[0]!r} out of range 0..{task.num_labels - 1}")


def choice_row(row: dict, task: Task, where: str) -> dict:
    """One multiple-choice row: the context (columns joined by a space), its choices and the answer's index."""
    if len(task.choices) == 1:
        column, *keys = task.choices[0].split(".")
        choices = row[column]
        for key in keys:
            choices = choices[key]
    else:
        choices = [row[c] for c in task.choices]
    label = row[task.label] if task.label_map is None else map_label(row[task.label], task, where)
    if not 2 <= len(choices) <= task.num_labels:
        raise ConfigError(f"{where}: a row has {len(choices)} choices; {task.name}.num_labels allows 2..{task.num_labels}")
    if not isinstance(label, int) or not 0 <= label < len(choices):
        raise ConfigError(f"{where}: label {label!r} out of range 0..{len(choices) - 1} (the row's choices)")
    context, question = (str(row[c]) for c in task.text) if len(task.text) == 2 else (str(row[task.text[0]]), "")
    return {"context": context, "question": question, "choices": [str(c) for c in choices], "label": label}


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


def report_mrqa_differences(ds, where: str, filtered: bool) -> None:
    """One line in the download log: how many rows' MRQA answer text differs from the passage's text at its span."""
    flags = ds["text_differs"]
    rows = [i for i, f in enumerate(flags) if f]
    if rows:
        print(f"{where}: {len(rows)} of {len(flags)} rows have an MRQA answer text that differs from the passage's "
              f"text at its span after normalisation (the span's text is used); first rows{' (after source.filter)' if filtered else ''}: {rows[:5]}")


def download(task: Task, out_dir: str | Path, repo: str | Path = ".") -> None:
    data = select_splits(load_source(task, repo), task)
    with atomic_path(out_dir, is_dir=True) as tmp:
        data.save_to_disk(str(tmp))


def tokenize(task: Task, raw_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, max_length: int,
             num_proc: int = 1, doc_stride: int = 128) -> None:
    """Tokenize both splits with the model's tokenizer (see the module docstring for what is kept)."""
    from datasets import DatasetDict, load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = load_from_disk(str(raw_dir))
    if task.type == "span":
        from .spans import windows

        encode = windows(tokenizer, max_length, doc_stride)
    elif task.type == "multiple_choice":
        from .spans import clip

        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - 1  # >= 1 passage token stays

        def encode(batch):  # (passage, question + choice), cutting only the passage: only_first
            ids = []
            for passage, question, choices in zip(batch["context"], batch["question"], batch["choices"]):
                endings = [clip(tokenizer, f"{question} {c}" if question else c, room) for c in choices]
                ids.append(tokenizer([passage] * len(endings), endings, truncation="only_first",
                                     max_length=max_length)["input_ids"])
            return {"input_ids": ids, "label": batch["label"]}
    else:
        def encode(batch):
            enc = tokenizer(*[batch[column] for column in task.text], truncation=True, max_length=max_length)
            return {"input_ids": enc["input_ids"], "label": batch[task.label]}

    out = {}
    for split, ds in data.items():
        out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names, with_indices=task.type == "span",
                            num_proc=num_proc if num_proc > 1 else None, desc=f"tokenize {task.name} {split}")
    if task.type == "span":  # evaluation maps predicted windows back to these passages and gold answers
        out["validation_examples"] = data["validation"]
    with atomic_path(out_dir, is_dir=True) as tmp:
        DatasetDict(out).save_to_disk(str(tmp))


def load_tokenized(path: str | Path, split: str):
    """A memory-mapped tokenized split."""
    from datasets import load_from_disk

    return load_from_disk(str(Path(path) / split))


def fraction(ds, percent: int, seed: int):
    """The first ``percent`` % of the examples in a seeded order: nested (10 % inside 20 % ...) and fixed
    by ``seed``, whatever the fine-tuning seed. Span windows are kept or dropped with their example."""
    import numpy as np

    if percent == 100:
        return ds
    examples = ds["example"] if "example" in ds.column_names else list(range(len(ds)))
    n = max(examples) + 1 if len(examples) else 0
    keep = set(np.random.default_rng(seed).permutation(n)[: max(1, round(n * percent / 100))].tolist())
    return ds.select([row for row, example in enumerate(examples) if example in keep])
