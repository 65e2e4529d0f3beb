"""Getting datasets onto disk once, checking them, and tokenizing them once per tokenizer.

``download`` turns any registry source into an on-disk ``DatasetDict`` holding exactly the splits the
experiment uses (renamed to ``train``/``validation``), every row checked and in its family's layout.
``tokenize`` stores each family's model inputs per row, truncated, unpadded (batches are padded dynamically).
Both are memory-mapped Arrow on disk, shared by every subset and fine-tuning run. Each family's data part
(``prefinetune.families``) says what its layout holds and what truncation may cut:
  classification, regression   the text column(s) and the label; the longer sentence loses its end
  multiple_choice              context, question, choices, label; only the passage loses its end
  span                         question, context, answers; the passage is cut into overlapping windows
  summarization                document, summary; each loses its end beyond its length
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path

from .checks import check_text, origin
from .families import family
from .io import atomic_path, write_json
from .synthetic import generate
from .tasks import ConfigError, Task

SPLITS = ("train", "validation")
LABEL_MAP = "label_map.json"  # beside a dataset (and its tokenized copy): raw label value -> index
FILE_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}


def load_source(task: Task, repo: str | Path = "."):
    """Load a task's data through ``datasets.load_dataset`` (hub or local files) or the built-in generator."""
    import datasets

    src = task.source
    if "generator" in src:
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


def select_splits(raw, task: Task, repo: str | Path = "."):
    """The experiment's two splits under their canonical names, checked and in the task family's layout."""
    from datasets import DatasetDict

    out = {}
    for canonical in SPLITS:
        name = task.splits[canonical]
        if name not in raw:
            raise ConfigError(f"task {task.name}: split '{name}' not found (has {sorted(raw)})")
        ds = raw[name]
        columns = family(task).data.input_columns(task)
        for column in columns:
            if column not in ds.column_names:
                raise ConfigError(f"task {task.name}: split '{name}' has no column '{column}' (has {ds.column_names})")
        ds = ds.select_columns(columns)
        where = f"task {task.name}: {origin(task, name)}"
        if task.source.get("filter"):  # row numbers below count the rows that source.filter kept
            where += " (rows after source.filter)"
        if len(ds) == 0:
            raise ConfigError(f"{where}: no rows (the {canonical} split needs some)")
        check_text(ds, task.text, where)
        file = task.source.get("files", {}).get(name)
        out[canonical] = family(task).data.layout(ds, task, where, Path(repo) / file if file else None)
        if canonical == "train":
            family(task).data.check_training(out[canonical], task, where)
    return DatasetDict(out)


def download(task: Task, out_dir: str | Path, repo: str | Path = ".") -> None:
    """Load, check every row, and save; the label map (the registry's, or read from the data) goes beside it."""
    raw = load_source(task, repo)
    task = family(task).data.prepare(raw, task)
    data = select_splits(raw, task, repo)
    with atomic_path(out_dir, is_dir=True) as tmp:
        data.save_to_disk(str(tmp))
        if task.label_map is not None:
            write_json(tmp / LABEL_MAP, {str(k): v for k, v in task.label_map.items()})


def tokenize(task: Task, raw_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, max_length: int,
             num_proc: int = 1, doc_stride: int = 128) -> None:
    """Tokenize both splits with the model's tokenizer, as the task's family encodes them (see the module
    docstring for what is kept). Each split's ``info.description`` is the family's name."""
    from datasets import DatasetDict, load_from_disk

    tokenizer = fast_tokenizer(tokenizer_dir)
    data = load_from_disk(str(raw_dir))
    fam = family(task)
    encode = fam.data.encoder(task, tokenizer, {"max_length": max_length, "doc_stride": doc_stride})
    out = {}
    for split, ds in data.items():
        out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names, with_indices=fam.data.with_indices,
                            num_proc=num_proc if num_proc > 1 else None, desc=f"tokenize {task.name} {split}")
        out[split].info.description = fam.name
    if fam.data.keeps_examples:  # scoring reads the original validation examples (passages, answers, summaries)
        out["validation_examples"] = data["validation"]
    with atomic_path(out_dir, is_dir=True) as tmp:
        DatasetDict(out).save_to_disk(str(tmp))
        if (Path(raw_dir) / LABEL_MAP).is_file():  # fine-tuning writes it into metrics.json
            (tmp / LABEL_MAP).write_text((Path(raw_dir) / LABEL_MAP).read_text())


def fast_tokenizer(model_dir: str | Path):
    """The model's tokenizer from its tokenizer.json, without importing torch (``AutoTokenizer``'s module does, a
    few seconds per job); a model saved without one falls back to ``AutoTokenizer``."""
    if (Path(model_dir) / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def label_map(dataset_dir: str | Path) -> dict | None:
    """The label map saved beside a dataset or its tokenized copy (raw label -> index), if it has one."""
    path = Path(dataset_dir) / LABEL_MAP
    return json.loads(path.read_text()) if path.is_file() else None


def load_tokenized(path: str | Path, split: str):
    """A memory-mapped tokenized split."""
    from datasets import load_from_disk

    return load_from_disk(str(Path(path) / split))


def _examples(ds):
    """The example of each row of a tokenized split (span: a passage's windows share theirs), and their number."""
    import numpy as np

    examples = np.asarray(ds["example"]) if "example" in ds.column_names else np.arange(len(ds))
    return examples, int(examples.max()) + 1 if len(examples) else 0


def fraction(ds, percent: int, seed: int):
    """The first ``percent`` % of the examples in a seeded order: nested (10 % inside 20 % ...) and fixed
    by ``seed``, whatever the fine-tuning seed. Span windows are kept or dropped with their example."""
    import numpy as np

    if percent == 100:
        return ds
    examples, n = _examples(ds)
    keep = np.random.default_rng(seed).permutation(n)[: max(1, round(n * percent / 100))]
    return ds.select(np.flatnonzero(np.isin(examples, keep)))


def hold_out(ds, count: int, name: str):
    """A tokenized training split as (the rows that train, a held-out slice of ``count`` examples, at most a tenth
    of them): the convergence budget's validation data, which no target is scored on. The slice is a random
    choice fixed by the task's ``name`` (the same in every model); span windows go with their example."""
    import numpy as np

    examples, n = _examples(ds)
    held = np.random.default_rng(zlib.crc32(name.encode())).permutation(n)[: min(count, max(1, n // 10))]
    out = np.isin(examples, held)
    return ds.select(np.flatnonzero(~out)), ds.select(np.flatnonzero(out))
