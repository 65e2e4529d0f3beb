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

import csv
import dataclasses
import io
import json
from pathlib import Path

from .evaluation import normalize_answer
from .io import atomic_path, write_json
from .tasks import ConfigError, Task

SPLITS = ("train", "validation")
LABEL_MAP = "label_map.json"  # beside a dataset (and its tokenized copy): raw label value -> index
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
            splits[split] = load_file(task, split, path, name)
        return apply_filter(used_splits(datasets.DatasetDict(splits), task), task)
    try:
        raw = datasets.load_dataset(src["hub"], src.get("config"), revision=src.get("revision"))
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        _raise_if_empty(error, f"task {task.name}: {src['hub']}")
        raise
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


def load_file(task: Task, split: str, path: Path, name: str):
    """One local file as a split. An empty file, bytes that are not UTF-8 and a malformed JSON line stop with
    the file's name (``name``, as the registry gives it) and the line."""
    import datasets

    where = f"task {task.name}: {name}"
    data = path.read_bytes()
    if not data.strip():
        raise ConfigError(f"{where}: the file is empty (split '{split}' needs rows)")
    if path.suffix != ".parquet":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            byte = error.start - data.rfind(b"\n", 0, error.start)  # 1-based within the line
            lines = data.splitlines()
            column = _field_of_bad_bytes(lines[0], lines[line - 1], path.suffix) if lines else None
            field = f": column '{column}'" if column else ""
            raise ConfigError(f"{where}: line {line}{field}: bytes that are not UTF-8 "
                              f"(0x{data[error.start]:02x} at byte {byte} of the line)") from None
    kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    try:
        return datasets.load_dataset(FILE_BUILDERS[path.suffix.lstrip(".")], data_files={split: str(path)},
                                     split=split, **kwargs)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        _raise_if_empty(error, where)
        if not isinstance(error, datasets.exceptions.DatasetGenerationError):
            raise
        bad = _bad_json_line(data.decode("utf-8"), path.suffix) if path.suffix in (".jsonl", ".json") else None
        if bad is None:
            raise  # not a mistake this check knows: the datasets library's own error
        line, problem = bad
        raise ConfigError(f"{where}: line {line}: {problem}") from None


def _raise_if_empty(error: Exception, where: str) -> None:
    """The datasets library's two ways of saying that a split has no rows, as one line."""
    import re

    cause = str(error.__cause__ or error)
    named = re.fullmatch(r'Instruction "(.+)" corresponds to no data!', str(error))
    if named:
        raise ConfigError(f"{where}: no rows (split '{named.group(1)}' needs some)") from None
    if "BatchSize must be greater than 0" in cause:  # a parquet file without rows
        raise ConfigError(f"{where}: a split has no rows ({cause})") from None


def _bad_json_line(text: str, suffix: str):
    """(line, problem) of the first line that is not a JSON object, or None; a .json array: where it breaks."""
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as error:
            return error.lineno, f"not valid JSON ({error.msg}, column {error.colno})"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            return number, f"not valid JSON ({error.msg}, column {error.colno})"
        if not isinstance(row, dict):
            return number, f"a JSON {type(row).__name__}, not an object of columns"
    return None


def _field_of_bad_bytes(header: bytes, line: bytes, suffix: str):
    """The column holding the bytes that are not UTF-8 in one line of a jsonl or csv file, if it can be told."""
    def bad(value):
        return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)

    text = line.decode("utf-8", "surrogateescape")
    try:
        if suffix in (".jsonl", ".json"):
            row = json.loads(text)
            return next((key for key, value in row.items() if bad(value)), None) if isinstance(row, dict) else None
        names = next(csv.reader([header.decode("utf-8", "surrogateescape")], delimiter="\t" if suffix == ".tsv" else ","))
        values = next(csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        return next((n for n, value in zip(names, values) if bad(value)), None)
    except (ValueError, StopIteration):
        return None  # the line is broken in other ways too: the line number alone must do


def origin(task: Task, split: str) -> str:
    """Where a split's rows come from, for messages: its file, or the hub id (and config) and the split."""
    src = task.source
    if "files" in src and split in src["files"]:
        return src["files"][split]
    if "hub" in src:
        config = f" ({src['config']})" if src.get("config") else ""
        return f"{src['hub']}{config} split '{split}'"
    return f"split '{split}'"


def input_columns(task: Task) -> list[str]:
    """The source columns an entry reads (the first part of a dotted ``choices`` path)."""
    return list(dict.fromkeys([*task.text, *(c.split(".")[0] for c in task.choices), task.label]))


def select_splits(raw, task: Task, repo: str | Path = "."):
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
        where = f"task {task.name}: {origin(task, name)}"
        if task.source.get("filter"):  # row numbers below count the rows that source.filter kept
            where += " (rows after source.filter)"
        if len(ds) == 0:
            raise ConfigError(f"{where}: no rows (the {canonical} split needs some)")
        check_text(ds, [*task.text, *(task.choices if len(task.choices) > 1 else ())], where)
        if task.type in ("multiple_choice", "span"):
            check_not_null(ds, task.label, where)
        if task.type == "multiple_choice":
            ds = ds.map(lambda row, i: choice_row(row, task, f"{where}: row {i + 1}"), with_indices=True,
                        remove_columns=ds.column_names, desc="choices")
        elif task.type == "span":
            ds = ds.map(lambda row, i: span_row(row, task, f"{where}: row {i + 1}"), with_indices=True,
                        remove_columns=ds.column_names, desc="answers")
            if task.answer_format == "mrqa":
                report_mrqa_differences(ds, where)
                ds = ds.remove_columns("text_differs")
        else:
            if task.label_map is not None:
                features = ds.features.copy()
                features[task.label] = Value("int64")
                mapping = {str(k): v for k, v in task.label_map.items()}
                ds = ds.map(lambda rows, rows_i: {task.label: [mapping[str(y)] if y is not None and str(y) in mapping
                                                               else map_label(y, task, where, i + 1)  # raises
                                                               for y, i in zip(rows[task.label], rows_i)]},
                            batched=True, with_indices=True, features=features, desc="labels")
            file = task.source.get("files", {}).get(name)
            check_labels(ds, task, where, Path(repo) / file if file else None)
        out[canonical] = ds
    return DatasetDict(out)


def map_label(value, task: Task, where: str, row: int | None = None) -> int:
    mapping = {str(k): v for k, v in task.label_map.items()}
    if str(value) not in mapping or value is None:
        at = f": row {row}" if row is not None else ""
        problem = "the label is null" if value is None else f"label {value!r} is not in {task.name}.label_map {sorted(mapping)}"
        raise ConfigError(f"{where}{at}: column '{task.label}': {problem}")
    return mapping[str(value)]


def check_not_null(ds, column: str, where: str) -> None:
    import pyarrow.compute as pc

    values = ds.with_format("arrow")[column]
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise ConfigError(f"{where}: row {row + 1}: column '{column}': null")


def check_text(ds, columns, where: str) -> None:
    """Every row of the text columns holds text: not null, not a number, valid UTF-8 (one Arrow pass each)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in columns:
        dtype = getattr(ds.features[column], "dtype", None)
        values = ds.with_format("arrow")[column]
        if dtype == "null" or values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise ConfigError(f"{where}: row {row + 1}: column '{column}': null, not text")
        if dtype not in ("string", "large_string"):
            raise ConfigError(f"{where}: row 1: column '{column}': {ds[0][column]!r} is {dtype or 'not a value'}, not text")
        try:
            values.validate(full=True)
        except pa.ArrowInvalid:  # Arrow holds a jsonl file's bytes unchecked; find the row that is not UTF-8
            for row, raw in enumerate(values.cast(pa.binary()).to_pylist()):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ConfigError(f"{where}: row {row + 1}: column '{column}': bytes that are not UTF-8 "
                                      f"(0x{raw[error.start]:02x} at byte {error.start})") from None
            raise


def check_labels(ds, task: Task, where: str, file: Path | None = None) -> None:
    """Classification labels are whole numbers 0..num_labels-1 (a float gets its own message); regression
    labels are numbers. ``file``: a local jsonl file, searched for the first float label's line."""
    import pyarrow.compute as pc

    values = ds.with_format("arrow")[task.label]
    dtype = getattr(ds.features[task.label], "dtype", None)

    def fail(row, message):
        raise ConfigError(f"{where}: row {row + 1}: column '{task.label}': {message}")

    if values.null_count:
        fail(pc.index(pc.is_null(values), True).as_py(), "the label is null")
    numeric = dtype is not None and dtype.startswith(("int", "uint", "float"))
    if task.type == "regression":
        if not numeric:
            fail(0, f"{ds[0][task.label]!r} is not a number (regression labels are numbers)")
        return
    if dtype is not None and dtype.startswith("float"):
        row = _first_float_row(values, task.label, file)
        value = values[row].as_py()
        fail(row, f"label {value!r} is a float; classification labels are whole numbers 0..{task.num_labels - 1}"
                  + (f" (write {int(value)})" if value.is_integer() else ""))
    if not numeric:
        hint = "; give a label_map, or leave it out to read the labels from the data" if dtype == "string" else ""
        fail(0, f"label {ds[0][task.label]!r} is {dtype}, not a class index 0..{task.num_labels - 1}{hint}")
    outside = pc.or_(pc.less(values, 0), pc.greater_equal(values, task.num_labels))
    row = pc.index(outside, True).as_py()
    if row >= 0:
        fail(row, f"label {values[row].as_py()!r} out of range 0..{task.num_labels - 1}")


def _first_float_row(values, label: str, file: Path | None) -> int:
    """The first row whose label is not a whole number; else, in a jsonl file, the first written as a float
    (one float in a file makes Arrow read the whole column as floats)."""
    import pyarrow.compute as pc

    row = pc.index(pc.not_equal(values, pc.floor(values)), True).as_py()
    if row >= 0 or file is None or file.suffix != ".jsonl":
        return max(row, 0)
    rows = (json.loads(line) for line in file.read_text().splitlines() if line.strip())
    return next((i for i, r in enumerate(rows) if isinstance(r.get(label), float)), 0)


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


def labels_from_data(raw, task: Task) -> Task:
    """A classification task with text labels and no label_map: the map is the sorted set of the training
    split's labels. ``num_labels`` must match it, and every validation label must be one of them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    train_name, val_name = task.splits["train"], task.splits["validation"]
    if task.type != "classification" or task.label_map is not None or train_name not in raw:
        return task
    train = raw[train_name]
    if getattr(train.features.get(task.label), "dtype", None) not in ("string", "large_string"):
        return task  # numbers (checked later) or a missing column (select_splits names it)
    labels = sorted(pc.unique(train.with_format("arrow")[task.label]).drop_null().to_pylist())
    if len(labels) != task.num_labels:
        shown = labels if len(labels) <= 20 else [*labels[:20], "..."]
        raise ConfigError(f"task {task.name}: {origin(task, train_name)}: column '{task.label}': the training split has "
                          f"{len(labels)} labels {shown}, but {task.name}.num_labels is {task.num_labels}")
    if val_name in raw and task.label in raw[val_name].column_names:
        values = raw[val_name].with_format("arrow")[task.label]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            unseen = pc.invert(pc.fill_null(pc.is_in(values, value_set=pa.array(labels)), True))
            row = pc.index(unseen, True).as_py()
            if row >= 0:
                raise ConfigError(f"task {task.name}: {origin(task, val_name)}: row {row + 1}: column '{task.label}': label "
                                  f"{values[row].as_py()!r} is not one of the training split's labels {labels}")
    return dataclasses.replace(task, label_map={label: i for i, label in enumerate(labels)})


def download(task: Task, out_dir: str | Path, repo: str | Path = ".") -> None:
    """Load, check every row, and save; the label map (the registry's, or read from the data) goes beside it."""
    raw = load_source(task, repo)
    task = labels_from_data(raw, task)
    data = select_splits(raw, task, repo)
    with atomic_path(out_dir, is_dir=True) as tmp:
        data.save_to_disk(str(tmp))
        if task.label_map is not None:
            write_json(tmp / LABEL_MAP, {str(k): v for k, v in task.label_map.items()})


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
        if (Path(raw_dir) / LABEL_MAP).is_file():  # fine-tuning writes it into metrics.json
            (tmp / LABEL_MAP).write_text((Path(raw_dir) / LABEL_MAP).read_text())


def label_map(dataset_dir: str | Path) -> dict | None:
    """The label map saved beside a dataset or its tokenized copy (raw label -> index), if it has one."""
    path = Path(dataset_dir) / LABEL_MAP
    return json.loads(path.read_text()) if path.is_file() else None


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
