"""download + tokenize through the real ``datasets.load_dataset`` on fixtures written here.

Three registry sources: a local folder in the Hugging Face hub layout (README.md with ``configs:``),
local files (jsonl / csv / tsv / parquet), and the built-in generator.
"""

import datasets
import pandas as pd
import pytest
import yaml
from transformers import AutoTokenizer

from prefinetune.data import download, load_tokenized, tokenize
from prefinetune.families import load_registry
from prefinetune.models import fetch
from prefinetune.synthetic import generate_split
from prefinetune.tasks import ConfigError

MAX_LENGTH = 64


pytestmark = pytest.mark.usefixtures("isolated_hf")


def frame(seed, split_index, size, pair=False, num_labels=2, text_names=None, label_name="label"):
    cols = generate_split(seed, split_index, size, pair=pair, task_type="classification", num_labels=num_labels)
    df = pd.DataFrame(cols)
    if text_names:
        df = df.rename(columns=dict(zip([c for c in df.columns if c != "label"], text_names)))
    df["extra"] = range(len(df))  # a column the task does not use: download must drop it
    return df.rename(columns={"label": label_name})


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    texts = []
    for seed in (1, 2, 3):
        cols = generate_split(seed, 0, 300, pair=True, task_type="classification", num_labels=2)
        texts += cols["sentence1"] + cols["sentence2"]
    out = tmp_path_factory.mktemp("models") / "tiny"
    fetch({"name": "t", "build": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "vocab_size": 400}}, out, texts=texts)
    return out


def registry(tmp_path, **entries):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(entries))
    return load_registry(path)


def entry(source, text=("sentence",), label="label", num_labels=2, **extra):
    return {"source": source, "type": "classification", "text": list(text), "label": label,
            "num_labels": num_labels, "metric": "accuracy", **extra}


def write_hub_folder(root, splits: dict[str, pd.DataFrame]):
    """A dataset folder laid out as on the Hugging Face hub: parquet shards + README configs."""
    (root / "data").mkdir(parents=True)
    data_files = []
    for split, df in splits.items():
        df.to_parquet(root / "data" / f"{split}-00000-of-00001.parquet", index=False)
        data_files.append({"split": split, "path": f"data/{split}-*.parquet"})
    card = {"configs": [{"config_name": "default", "data_files": data_files}]}
    (root / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n# test dataset\n")
    return root


def check_tokenized(task, raw_dir, tok_dir, tokenizer_dir, sizes):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    raw = datasets.load_from_disk(str(raw_dir))
    assert sorted(raw) == ["train", "validation"]
    for split, n in sizes.items():
        assert raw[split].column_names == [*task.text, task.label]
        assert len(raw[split]) == n
        ds = load_tokenized(tok_dir, split)
        assert sorted(ds.column_names) == ["input_ids", "label"]
        assert len(ds) == n
        assert ds["label"] == raw[split][task.label]
        rows = ds["input_ids"]
        assert all(r[0] == tok.bos_token_id for r in rows)
        assert all(r[-1] == tok.eos_token_id for r in rows)
        assert all(len(r) <= MAX_LENGTH for r in rows)
        # identical to the tokenizer's own encoding of the raw text
        texts = [raw[split][c][:5] for c in task.text]
        assert [list(r) for r in rows[:5]] == tok(*texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    return tok


# -- (a) a local folder in the hub layout --------------------------------------------------------------------
def test_hub_folder(tmp_path, tokenizer_dir):
    folder = write_hub_folder(tmp_path / "myds", {"train": frame(1, 0, 120, label_name="gold"),
                                                  "validation": frame(1, 1, 30, label_name="gold")})
    task = registry(tmp_path, myds=entry({"hub": str(folder)}, label="gold"))["myds"]
    raw, tok = tmp_path / "raw" / "myds", tmp_path / "tok" / "myds"
    download(task, raw)
    tokenize(task, raw, tokenizer_dir, tok, MAX_LENGTH)
    check_tokenized(task, raw, tok, tokenizer_dir, {"train": 120, "validation": 30})


def test_hub_folder_with_renamed_split(tmp_path, tokenizer_dir):
    folder = write_hub_folder(tmp_path / "myds", {"train": frame(2, 0, 50, pair=True), "dev": frame(2, 1, 20, pair=True),
                                                  "test": frame(2, 2, 7, pair=True)})
    task = registry(tmp_path, myds=entry({"hub": str(folder)}, text=("sentence1", "sentence2"),
                                         splits={"validation": "dev"}))["myds"]
    raw = tmp_path / "raw"
    download(task, raw)
    data = datasets.load_from_disk(str(raw))
    assert sorted(data) == ["train", "validation"]  # dev renamed, test dropped
    assert len(data["validation"]) == 20
    assert data["validation"]["sentence1"] == list(frame(2, 1, 20, pair=True)["sentence1"])


# -- (b) local files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv", "parquet"])
def test_local_files(tmp_path, tokenizer_dir, suffix):
    files = {}
    for i, (split, n) in enumerate({"train": 80, "validation": 20}.items()):
        df = frame(3, i, n, num_labels=3)
        name = f"data/{split}.{suffix}"
        (tmp_path / "data").mkdir(exist_ok=True)
        path = tmp_path / name
        if suffix == "jsonl":
            df.to_json(path, orient="records", lines=True)
        elif suffix == "csv":
            df.to_csv(path, index=False)
        elif suffix == "tsv":
            df.to_csv(path, index=False, sep="\t")
        else:
            df.to_parquet(path, index=False)
        files[split] = name  # relative to the repository root
    task = registry(tmp_path, local=entry({"files": files}, num_labels=3))["local"]
    raw, tok = tmp_path / "raw", tmp_path / "tok"
    download(task, raw, repo=tmp_path)
    tokenize(task, raw, tokenizer_dir, tok, MAX_LENGTH)
    check_tokenized(task, raw, tok, tokenizer_dir, {"train": 80, "validation": 20})
    assert load_tokenized(tok, "train")["label"] == list(frame(3, 0, 80, num_labels=3)["label"])


def test_local_files_of_mixed_types(tmp_path):
    frame(4, 0, 10).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    frame(4, 1, 10).to_csv(tmp_path / "validation.csv", index=False)
    task = registry(tmp_path, mixed=entry({"files": {"train": "train.jsonl", "validation": "validation.csv"}}))["mixed"]
    download(task, tmp_path / "raw", repo=tmp_path)  # each split is read with its own builder
    data = datasets.load_from_disk(str(tmp_path / "raw"))
    assert len(data["train"]) == 10 and len(data["validation"]) == 10


def test_missing_data_file(tmp_path):
    task = registry(tmp_path, local=entry({"files": {"train": "nope.jsonl", "validation": "nope2.jsonl"}}))["local"]
    with pytest.raises(ConfigError, match="nope.jsonl"):
        download(task, tmp_path / "raw", repo=tmp_path)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "a.xlsx").write_text("x")
    task = registry(tmp_path, local=entry({"files": {"train": "a.xlsx", "validation": "a.xlsx"}}))["local"]
    with pytest.raises(ConfigError, match="xlsx"):
        download(task, tmp_path / "raw", repo=tmp_path)


# -- (c) the generator ----------------------------------------------------------------------------------------
def test_generator_pair_task(tmp_path, tokenizer_dir):
    task = registry(tmp_path, gen=entry({"generator": {"seed": 7, "pair": True, "train": 60, "validation": 25}},
                                        text=("sentence1", "sentence2")))["gen"]
    raw, tok_dir = tmp_path / "raw", tmp_path / "tok"
    download(task, raw)
    tokenize(task, raw, tokenizer_dir, tok_dir, MAX_LENGTH)
    tok = check_tokenized(task, raw, tok_dir, tokenizer_dir, {"train": 60, "validation": 25})

    # a pair is encoded as <s> A </s></s> B </s>: both sentences are in every row
    first = datasets.load_from_disk(str(raw))["train"][0]
    row = list(load_tokenized(tok_dir, "train")["input_ids"][0])
    eos = tok.eos_token_id
    assert row.count(eos) == 3
    cut = row.index(eos)
    assert row[cut + 1] == eos
    assert tok.decode(row[1:cut]).strip() == first["sentence1"]
    assert tok.decode(row[cut + 2:-1]).strip() == first["sentence2"]


def test_generator_is_deterministic(tmp_path):
    task = registry(tmp_path, gen=entry({"generator": {"seed": 7, "train": 30, "validation": 10}}))["gen"]
    download(task, tmp_path / "a")
    download(task, tmp_path / "b")
    a, b = datasets.load_from_disk(str(tmp_path / "a")), datasets.load_from_disk(str(tmp_path / "b"))
    for split in ("train", "validation"):
        assert a[split].to_dict() == b[split].to_dict()
    assert a["train"]["sentence"] != a["validation"]["sentence"]


def test_truncation(tmp_path, tokenizer_dir):
    task = registry(tmp_path, gen=entry({"generator": {"seed": 8, "pair": True, "train": 40, "validation": 10}},
                                        text=("sentence1", "sentence2")))["gen"]
    raw = tmp_path / "raw"
    download(task, raw)
    tokenize(task, raw, tokenizer_dir, tmp_path / "long", MAX_LENGTH)
    tokenize(task, raw, tokenizer_dir, tmp_path / "short", 12)
    long_rows = load_tokenized(tmp_path / "long", "train")["input_ids"]
    short_rows = load_tokenized(tmp_path / "short", "train")["input_ids"]
    assert max(len(r) for r in long_rows) > 12  # so the short version really had to cut
    assert all(len(r) <= 12 for r in short_rows)
    assert sum(len(r) == 12 for r in short_rows) > len(short_rows) // 2
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert all(r[0] == tok.bos_token_id and r[-1] == tok.eos_token_id and list(r).count(tok.eos_token_id) == 3
               for r in short_rows)  # truncation keeps both sentences and the special tokens


def test_tokenize_regression_labels(tmp_path, tokenizer_dir):
    reg = {"source": {"generator": {"seed": 9, "train": 20, "validation": 5}}, "type": "regression",
           "text": ["sentence"], "label": "label", "num_labels": 1, "metric": "pearson"}
    task = registry(tmp_path, reg=reg)["reg"]
    download(task, tmp_path / "raw")
    tokenize(task, tmp_path / "raw", tokenizer_dir, tmp_path / "tok", MAX_LENGTH)
    labels = load_tokenized(tmp_path / "tok", "train")["label"]
    assert all(isinstance(y, float) for y in labels)
    assert len(set(labels)) > 10


# -- errors ---------------------------------------------------------------------------------------------------
def hub_task(tmp_path, train, validation, **entry_kwargs):
    folder = write_hub_folder(tmp_path / "myds", {"train": train, "validation": validation})
    return registry(tmp_path, myds=entry({"hub": str(folder)}, **entry_kwargs))["myds"]


def one_line_error(task, out) -> str:
    with pytest.raises(ConfigError) as info:
        download(task, out)
    message = str(info.value)
    assert "\n" not in message
    assert task.name in message
    assert not out.exists()
    if out.parent.exists():  # no temporary sibling left behind either
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return message


def test_missing_column(tmp_path):
    task = hub_task(tmp_path, frame(1, 0, 20), frame(1, 1, 10), text=("sentnce",))
    message = one_line_error(task, tmp_path / "raw")
    assert "sentnce" in message


def test_missing_label_column(tmp_path):
    task = hub_task(tmp_path, frame(1, 0, 20), frame(1, 1, 10), label="gold")
    assert "'gold'" in one_line_error(task, tmp_path / "raw")


def test_label_out_of_range(tmp_path):
    validation = frame(1, 1, 10)
    validation.loc[4, "label"] = 7
    task = hub_task(tmp_path, frame(1, 0, 20), validation)
    message = one_line_error(task, tmp_path / "raw")
    assert "label 7" in message and "validation" in message


def test_negative_label(tmp_path):
    train = frame(1, 0, 20)
    train.loc[0, "label"] = -1
    task = hub_task(tmp_path, train, frame(1, 1, 10))
    assert "label -1" in one_line_error(task, tmp_path / "raw")


def test_missing_split(tmp_path):
    task = hub_task(tmp_path, frame(1, 0, 20), frame(1, 1, 10), splits={"validation": "dev"})
    message = one_line_error(task, tmp_path / "raw")
    assert "'dev'" in message


def test_failed_download_leaves_no_output(tmp_path):
    """Atomic outputs: after a failure there is no output directory (nor a temporary) at all."""
    task = hub_task(tmp_path, frame(1, 0, 20), frame(1, 1, 10), text=("nope",))
    out = tmp_path / "resources" / "data" / "myds"
    with pytest.raises(ConfigError):
        download(task, out)
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []


def test_download_replaces_an_existing_output(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    task = registry(tmp_path, gen=entry({"generator": {"seed": 7, "train": 12, "validation": 4}}))["gen"]
    download(task, out)
    assert not (out / "stale.txt").exists()
    assert len(datasets.load_from_disk(str(out))["train"]) == 12
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".raw.")) == []
