"""Bad data, one test per case: the download step stops at the first row it cannot take, with one exact line
naming the file (or the hub id and split), the row and the column, and leaves nothing that looks finished.
Also: string labels read from the data, and outputs that follow the umask.

The cases run ``data.download`` on small local jsonl tasks, and on folders in the Hugging Face hub layout as
``test_data`` writes them. The same mistakes through Snakemake, and config mistakes: tests/workflow/test_bad_config.py.
"""

import json
import os

import datasets
import pandas as pd
import pytest
import yaml

from data_helpers import CHOICE_ROW, CLASSIFICATION, MULTIPLE_CHOICE, SPAN, SPAN_ROW, jsonl, local_task, sentences
from prefinetune.data import LABEL_MAP, download, label_map, tokenize
from prefinetune.families import load_registry
from prefinetune.io import atomic_path
from prefinetune.models import fetch
from prefinetune.stages import finetune
from prefinetune.tasks import ConfigError
from test_data import write_hub_folder

pytestmark = pytest.mark.usefixtures("isolated_hf")
REGRESSION = {**CLASSIFICATION, "type": "regression", "num_labels": 1, "metric": "pearson"}


def download_error(tmp_path, task) -> str:
    """The download's one-line message; asserts that nothing was saved, not even a temporary folder."""
    out = tmp_path / "resources" / "datasets" / task.name
    with pytest.raises(ConfigError) as info:
        download(task, out, repo=tmp_path)
    message = str(info.value)
    assert "\n" not in message, message
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no .<name>.*.tmp left either
    return message


# -- the download step checks every row: one test per case --------------------------------------------------------
NOT_UTF8 = b'{"sentence": "caf\xe9 noir", "label": 1}\n'  # Latin-1 bytes in a jsonl file
DATA_CASES = {
    "null_text": (jsonl(*sentences(3), {"sentence": None, "label": 0}), jsonl(*sentences(2)), CLASSIFICATION,
                  "task t: data/train.jsonl: row 4: column 'sentence': null, not text"),
    "number_as_text": (jsonl(*sentences(3)), jsonl({"sentence": 12, "label": 0}), CLASSIFICATION,
                       "task t: data/validation.jsonl: row 1: column 'sentence': 12 is int64, not text"),
    "not_utf8": (jsonl(*sentences(2)) + NOT_UTF8, jsonl(*sentences(2)), CLASSIFICATION,
                 "task t: data/train.jsonl: line 3: column 'sentence': bytes that are not UTF-8 (0xe9 at byte 18 of the line)"),
    "empty_validation_file": (jsonl(*sentences(3)), b"", CLASSIFICATION,
                              "task t: data/validation.jsonl: the file is empty (split 'validation' needs rows)"),
    "malformed_json_line": (jsonl(*sentences(2)) + b'{"sentence": "a b", "label": 1\n' + jsonl(*sentences(2)),
                            jsonl(*sentences(2)), CLASSIFICATION,
                            "task t: data/train.jsonl: line 3: not valid JSON (Expecting ',' delimiter, column 31)"),
    "json_line_not_an_object": (jsonl(*sentences(2), ["a b", 1]), jsonl(*sentences(2)), CLASSIFICATION,
                                "task t: data/train.jsonl: line 3: a JSON list, not an object of columns"),
    "float_label": (jsonl(*sentences(4), {"sentence": "x y", "label": 0.0}), jsonl(*sentences(2)), CLASSIFICATION,
                    "task t: data/train.jsonl: row 5: column 'label': label 0.0 is a float; classification labels "
                    "are whole numbers 0..1 (write 0)"),
    "label_out_of_range": (jsonl(*sentences(3)), jsonl(*sentences(2), {"sentence": "x y", "label": 2}), CLASSIFICATION,
                           "task t: data/validation.jsonl: row 3: column 'label': label 2 out of range 0..1"),
    "null_label": (jsonl(*sentences(3), {"sentence": "x y", "label": None}), jsonl(*sentences(2)), CLASSIFICATION,
                   "task t: data/train.jsonl: row 4: column 'label': the label is null"),
    "string_labels_more_than_num_labels": (
        jsonl(*sentences(6, labels=("neg", "pos", "neutral"))), jsonl(*sentences(2, labels=("neg", "pos"))), CLASSIFICATION,
        "task t: data/train.jsonl: column 'label': the training split has 3 labels ['neg', 'neutral', 'pos'], "
        "but t.num_labels is 2"),
    "validation_label_not_in_training": (
        jsonl(*sentences(4, labels=("neg", "pos"))), jsonl(*sentences(2, labels=("neg", "pos")), {"sentence": "x", "label": "Pos"}),
        CLASSIFICATION,
        "task t: data/validation.jsonl: row 3: column 'label': label 'Pos' is not one of the training split's labels ['neg', 'pos']"),
    "label_not_in_label_map": (
        jsonl(*sentences(4, labels=("neg", "pos")), {"sentence": "x", "label": "meh"}), jsonl(*sentences(2, labels=("neg", "pos"))),
        {**CLASSIFICATION, "label_map": {"neg": 0, "pos": 1}},
        "task t: data/train.jsonl: row 5: column 'label': label 'meh' is not in t.label_map ['neg', 'pos']"),
    "regression_label_not_a_number": (
        jsonl({"sentence": "a b", "label": "high"}), jsonl({"sentence": "a b", "label": 0.5}), REGRESSION,
        "task t: data/train.jsonl: row 1: column 'label': 'high' is not a number (regression labels are numbers)"),
    "empty_text": (jsonl(*sentences(3), {"sentence": "", "label": 0}), jsonl(*sentences(2)), CLASSIFICATION,
                   "task t: data/train.jsonl: row 4: column 'sentence': an empty text"),
    "whitespace_text": (jsonl(*sentences(3)), jsonl(*sentences(2), {"sentence": " \t ", "label": 0}), CLASSIFICATION,
                        "task t: data/validation.jsonl: row 3: column 'sentence': an empty text (only whitespace)"),
    "one_class_in_training": (jsonl(*sentences(4, labels=(1,))), jsonl(*sentences(2)), CLASSIFICATION,
                              "task t: data/train.jsonl: column 'label': every row's label is 1; the training split "
                              "needs two classes"),
    "constant_regression_labels": (
        jsonl(*sentences(4, labels=(0.5,))), jsonl(*sentences(2, labels=(0.1, 0.9))), REGRESSION,
        "task t: data/train.jsonl: column 'label': every row's label is 0.5; the training split needs labels that vary"),
    "infinite_regression_label": (
        jsonl(*sentences(3, labels=(0.1, 0.9))), jsonl(*sentences(2, labels=(0.1, 0.9)), {"sentence": "x", "label": 1e999}),
        REGRESSION, "task t: data/validation.jsonl: row 3: column 'label': label inf is not a finite number"),
    "null_choice": (jsonl(CHOICE_ROW, {**CHOICE_ROW, "sol2": None}), jsonl(CHOICE_ROW), MULTIPLE_CHOICE,
                    "task t: data/train.jsonl: row 2: column 'sol2': null, not text"),
    "text_answer_without_label_map": (jsonl(CHOICE_ROW), jsonl(CHOICE_ROW, {**CHOICE_ROW, "label": "sol1"}), MULTIPLE_CHOICE,
                                      "task t: data/validation.jsonl: row 2: column 'label': label 'sol1' is text; give t a label_map"),
    "too_many_choices": (jsonl(CHOICE_ROW), jsonl(CHOICE_ROW), {**MULTIPLE_CHOICE, "choices": ["sol1", "sol2", "goal"]},
                         "task t: data/train.jsonl: row 1: a row has 3 choices; t.num_labels allows 2..2"),
    "null_passage": (jsonl(SPAN_ROW, {**SPAN_ROW, "context": None}), jsonl(SPAN_ROW), SPAN,
                     "task t: data/train.jsonl: row 2: column 'context': null, not text"),
    "null_answers": (jsonl(SPAN_ROW), jsonl(SPAN_ROW, {**SPAN_ROW, "answers": None}), SPAN,
                     "task t: data/validation.jsonl: row 2: column 'answers': null"),
    "answer_not_in_passage": (jsonl(SPAN_ROW, {**SPAN_ROW, "answers": {"text": ["Bob"], "answer_start": [0]}}),
                              jsonl(SPAN_ROW), SPAN,
                              "task t: data/train.jsonl: row 2: answer 'Bob' is not the passage's text at offset 0"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_stops_the_download(tmp_path, case):
    train, validation, entry, expected = DATA_CASES[case]
    assert download_error(tmp_path, local_task(tmp_path, train, validation, entry)) == expected


def test_a_nan_label_in_parquet_stops_the_download(tmp_path):
    """Parquet holds NaN as a number, not as null (pandas would write null): a NaN regression label, which would
    train to a NaN loss, stops the download with its row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    rows = {"sentence": [f"w{i} x" for i in range(6)], "label": [0.1, 0.5, 0.9, float("nan"), 0.2, 0.3]}
    pq.write_table(pa.table(rows), tmp_path / "data" / "train.parquet")
    pq.write_table(pa.table(rows).slice(0, 3), tmp_path / "data" / "validation.parquet")
    files = {"train": "data/train.parquet", "validation": "data/validation.parquet"}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"t": {"source": {"files": files}, **REGRESSION}}))
    task = load_registry(tmp_path / "tasks.yaml")["t"]
    assert download_error(tmp_path, task) == "task t: data/train.parquet: row 4: column 'label': label nan is not a finite number"


def test_csv_file_without_rows(tmp_path):
    (tmp_path / "data").mkdir()
    pd.DataFrame({"sentence": ["a b", "c d"], "label": [0, 1]}).to_csv(tmp_path / "data" / "train.csv", index=False)
    (tmp_path / "data" / "validation.csv").write_text("sentence,label\n")  # a header only
    files = {"train": "data/train.csv", "validation": "data/validation.csv"}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"t": {"source": {"files": files}, **CLASSIFICATION}}))
    task = load_registry(tmp_path / "tasks.yaml")["t"]
    assert download_error(tmp_path, task) == "task t: data/validation.csv: no rows (split 'validation' needs some)"


def test_hub_split_without_rows(tmp_path):
    columns = {"sentence": ["a b", "c d"], "label": [0, 1]}
    folder = write_hub_folder(tmp_path / "hub" / "ds", {"train": pd.DataFrame(columns),
                                                        "validation": pd.DataFrame(columns).iloc[:0]})
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"t": {"source": {"hub": str(folder)}, **CLASSIFICATION}}))
    task = load_registry(tmp_path / "tasks.yaml")["t"]
    assert download_error(tmp_path, task) == (f"task t: {folder}: a split has no rows "
                                              "(BatchSize must be greater than 0, got 0)")


def test_hub_null_text_names_the_id_split_row_and_column(tmp_path):
    train = pd.DataFrame({"sentence": ["a b", "c d", None], "label": [0, 1, 0]})
    folder = write_hub_folder(tmp_path / "hub" / "ds", {"train": train, "validation": train.iloc[:2]})
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"t": {"source": {"hub": str(folder)}, **CLASSIFICATION}}))
    task = load_registry(tmp_path / "tasks.yaml")["t"]
    assert download_error(tmp_path, task) == f"task t: {folder} split 'train': row 3: column 'sentence': null, not text"


# -- labels read from the data ------------------------------------------------------------------------------------
def test_string_labels_without_label_map_are_read_from_the_training_split(tmp_path):
    names = ("positive", "negative", "neutral")
    task = local_task(tmp_path, jsonl(*sentences(30, labels=names)), jsonl(*sentences(9, labels=names[:2])),
                      {**CLASSIFICATION, "num_labels": 3})
    download(task, tmp_path / "raw", repo=tmp_path)
    expected = {"negative": 0, "neutral": 1, "positive": 2}  # the sorted set of the training labels
    assert label_map(tmp_path / "raw") == expected
    assert json.loads((tmp_path / "raw" / LABEL_MAP).read_text()) == expected
    raw = datasets.load_from_disk(str(tmp_path / "raw"))
    assert raw["train"]["label"][:3] == [expected[n] for n in names]
    fetch({"name": "tiny", "build": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 32, "vocab_size": 300}}, tmp_path / "model",
          texts=raw["train"]["sentence"])
    tokenize(task, tmp_path / "raw", tmp_path / "model", tmp_path / "tok", 32)
    settings = {"batch_size": 8, "seed": 0, "temperature": 1.0, "cap": None, "batches": "heterogeneous", "lr": 1e-3,
                "weight_decay": 0.0, "warmup_ratio": 0.0, "grad_accum": 1, "max_grad_norm": 1.0, "log_every": 5,
                "epochs": 0.3, "dropout": 0.0, "loss_scaling": True, "eval_batch_size": 8, "max_answer_tokens": 10,
                "carry_heads": False}
    finetune(task, str(tmp_path / "tok"), str(tmp_path / "model"), settings, 1, str(tmp_path / "metrics.json"),
             str(tmp_path / "log.tsv"), {"k": 0, "draw": 0})
    assert json.loads((tmp_path / "metrics.json").read_text())["label_map"] == expected


def test_registry_label_map_is_written_beside_the_dataset(tmp_path):
    task = local_task(tmp_path, jsonl(*sentences(4, labels=("no", "yes"))), jsonl(*sentences(2, labels=("no", "yes"))),
                      {**CLASSIFICATION, "label_map": {"yes": 0, "no": 1}})
    download(task, tmp_path / "raw", repo=tmp_path)
    assert label_map(tmp_path / "raw") == {"yes": 0, "no": 1}
    assert datasets.load_from_disk(str(tmp_path / "raw"))["train"]["label"][:2] == [1, 0]


def test_integer_labels_have_no_label_map(tmp_path):
    download(local_task(tmp_path, jsonl(*sentences(4)), jsonl(*sentences(2))), tmp_path / "raw", repo=tmp_path)
    assert label_map(tmp_path / "raw") is None


# -- outputs follow the umask ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_folder_outputs_follow_the_umask(tmp_path, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        download(local_task(tmp_path, jsonl(*sentences(4)), jsonl(*sentences(2))), tmp_path / "raw", repo=tmp_path)
        with atomic_path(tmp_path / "single.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "raw").stat().st_mode & 0o777 == folder_mode
    for path in (tmp_path / "raw").rglob("*"):
        assert path.stat().st_mode & 0o777 == (folder_mode if path.is_dir() else file_mode), path
    assert (tmp_path / "single.txt").stat().st_mode & 0o777 == file_mode
