"""Getting datasets onto disk once, checking them, and tokenizing them once per tokenizer.

``download`` turns any registry source into an on-disk ``DatasetDict`` holding exactly the splits the
experiment uses (renamed to ``train``/``validation``); ``tokenize`` stores ``input_ids`` and ``label``
per split, truncated, unpadded (batches are padded dynamically). Both are memory-mapped Arrow on disk,
shared by every subset and fine-tuning run.
"""

from __future__ import annotations

from pathlib import Path

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
        return datasets.DatasetDict(splits)
    return datasets.load_dataset(src["hub"], src.get("config"), revision=src.get("revision"))


def select_splits(raw, task: Task):
    """Keep the experiment's two splits under their canonical names, after checking columns and labels."""
    from datasets import DatasetDict

    out = {}
    for canonical in SPLITS:
        name = task.splits[canonical]
        if name not in raw:
            raise ConfigError(f"task {task.name}: split '{name}' not found (has {sorted(raw)})")
        ds = raw[name]
        for column in (*task.text, task.label):
            if column not in ds.column_names:
                raise ConfigError(f"task {task.name}: split '{name}' has no column '{column}' (has {ds.column_names})")
        check_labels(ds[task.label], task, name)
        out[canonical] = ds.select_columns([*task.text, task.label])
    return DatasetDict(out)


def check_labels(labels, task: Task, split: str) -> None:
    if task.type == "regression":
        return
    bad = [y for y in labels if not isinstance(y, int) or not 0 <= y < task.num_labels]
    if bad:
        raise ConfigError(f"task {task.name}: split '{split}': label {bad[0]!r} out of range 0..{task.num_labels - 1}")


def download(task: Task, out_dir: str | Path, repo: str | Path = ".") -> None:
    data = select_splits(load_source(task, repo), task)
    with atomic_path(out_dir, is_dir=True) as tmp:
        data.save_to_disk(str(tmp))


def tokenize(task: Task, raw_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, max_length: int,
             num_proc: int = 1) -> None:
    """Tokenize both splits with the model's tokenizer; keeps ``input_ids`` and ``label`` only."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = load_from_disk(str(raw_dir))

    def encode(batch):
        texts = [batch[column] for column in task.text]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "label": batch[task.label]}

    columns = data["train"].column_names
    data = data.map(encode, batched=True, remove_columns=[c for c in columns if c != "label"],
                    num_proc=num_proc if num_proc > 1 else None, desc=f"tokenize {task.name}")
    with atomic_path(out_dir, is_dir=True) as tmp:
        data.save_to_disk(str(tmp))


def load_tokenized(path: str | Path, split: str):
    """A memory-mapped tokenized split."""
    from datasets import load_from_disk

    return load_from_disk(str(Path(path) / split))
