"""Bad input, one test per case: it stops at the first step that can see it, with one exact line naming the
file and the field (or the row and column), and leaves nothing that looks finished.

Data mistakes stop the download step (``data.download`` on small local jsonl tasks, and on folders in the
Hugging Face hub layout as ``test_data`` writes them). Config mistakes stop ``snakemake`` itself before any
job: each runs the real workflow (not a dry run), so a mistake the check missed would start jobs.
"""

import json
import os
import signal
import subprocess
import time

import datasets
import pandas as pd
import pytest
import yaml

from prefinetune.data import LABEL_MAP, download, label_map, tokenize
from prefinetune.io import atomic_path
from prefinetune.models import fetch
from prefinetune.stages import finetune
from prefinetune.tasks import ConfigError, load_registry
from test_data import write_hub_folder
from workflow_helpers import REPO, SNAKEMAKE, load_config, make_workdir, snakemake


@pytest.fixture(autouse=True)
def isolated_hf(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def sentences(n, labels=(0, 1)):
    return [{"sentence": f"word{i} other{i % 3}", "label": labels[i % len(labels)]} for i in range(n)]


CLASSIFICATION = {"type": "classification", "text": ["sentence"], "label": "label", "num_labels": 2, "metric": "accuracy"}
MULTIPLE_CHOICE = {"type": "multiple_choice", "text": ["goal"], "choices": ["sol1", "sol2"], "label": "label",
                   "num_labels": 2, "metric": "accuracy"}
SPAN = {"type": "span", "text": ["question", "context"], "label": "answers", "metric": "f1"}
CHOICE_ROW = {"goal": "open a door", "sol1": "push it", "sol2": "eat it", "label": 0}
SPAN_ROW = {"question": "who?", "context": "Ann met Bob.", "answers": {"text": ["Ann"], "answer_start": [0]}}


def local_task(tmp_path, train: bytes, validation: bytes, entry=CLASSIFICATION, name="t"):
    """A task whose splits are local jsonl files data/train.jsonl and data/validation.jsonl."""
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "train.jsonl").write_bytes(train)
    (tmp_path / "data" / "validation.jsonl").write_bytes(validation)
    files = {"train": "data/train.jsonl", "validation": "data/validation.jsonl"}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({name: {"source": {"files": files}, **entry}}))
    return load_registry(tmp_path / "tasks.yaml")[name]


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
        jsonl({"sentence": "a b", "label": "high"}), jsonl({"sentence": "a b", "label": 0.5}),
        {**CLASSIFICATION, "type": "regression", "num_labels": 1, "metric": "pearson"},
        "task t: data/train.jsonl: row 1: column 'label': 'high' is not a number (regression labels are numbers)"),
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


def test_a_bad_row_stops_the_download_job_with_one_line(tmp_path):
    """Through Snakemake: the job's console output ends in the one line, and no dataset folder is left."""
    config = load_config()
    local_task(tmp_path, jsonl(*sentences(3), {"sentence": None, "label": 0}), jsonl(*sentences(2)), name="my_task")
    registry = yaml.safe_load((tmp_path / "tasks.yaml").read_text())
    registry["my_task"]["source"]["files"] = {s: str(tmp_path / "data" / f"{s}.jsonl") for s in ("train", "validation")}
    registry.update(yaml.safe_load((REPO / config["registry"]).read_text()))  # the demo's tasks too
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(registry))
    workdir = make_workdir(tmp_path / "wd", {**config, "registry": str(tmp_path / "tasks.yaml")})
    result = snakemake(workdir, "--cores", "1", "resources/datasets/my_task")
    assert result.returncode == 1
    line = f"Error: task my_task: {tmp_path}/data/train.jsonl: row 4: column 'sentence': null, not text"
    assert line in result.stderr.splitlines()
    log = (workdir / "logs" / "download" / "my_task.log").read_text()
    assert log.splitlines()[-1] == line and "Traceback" not in log
    datasets_dir = workdir / "resources" / "datasets"
    assert not datasets_dir.exists() or list(datasets_dir.iterdir()) == []


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


# -- config checks: before any job, naming the file the value came from ---------------------------------------------
def run_workflow(workdir, *args):
    """The real workflow (not a dry run) in ``workdir``; returns (exit code, last line of stderr)."""
    result = snakemake(workdir, "--cores", "1", *args, timeout=300)
    return result.returncode, (result.stderr.strip().splitlines() or [""])[-1], result


def assert_no_job_started(workdir, result):
    assert "Building DAG of jobs" not in result.stdout + result.stderr
    assert not {"resources", "results", "logs", "benchmarks"} & {p.name for p in workdir.iterdir()}


def demo_with(**changes):
    config = load_config()
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            config[section][field] = value
        elif value is None:
            config.pop(section)
        else:
            config[section] = value
    return config


SPANLESS = {"pool": [f"syn_{i:02d}" for i in range(1, 18)], "targets": ["syn_target_pair"], "task_counts": [0, 3],
            "sample_efficiency": None}
CONFIG_CASES = {  # config.yaml changes, expected last line
    "float_draws": ({"draws": 2.0}, "config.yaml: draws: 2.0 is a float where a whole number belongs; write 2"),
    "float_task_count": ({"task_counts": [0, 3.0]},
                         "config.yaml: task_counts[1]: 3.0 is a float where a whole number belongs; write 3"),
    "float_max_steps": ({"prefinetune__max_steps": 20.0},
                        "config.yaml: prefinetune.max_steps: 20.0 is a float where a whole number belongs; write 20"),
    "not_whole": ({"finetune_seeds": 1.5}, "config.yaml: finetune_seeds: 1.5 is not a whole number"),
    "number_read_as_text": ({"prefinetune__lr": "2e-3"},
                            "config.yaml: prefinetune.lr: '2e-3' is text, not a number (YAML reads 2e-3 as a string); "
                            "write 2.0e-3"),
    "model_path_missing": ({"model": {"name": "m", "path": "no/such/model"}},
                           "config.yaml: model.path: no/such/model: no such folder"),
    "model_path_without_config_json": ({"model": {"name": "m", "path": "."}},
                                       "config.yaml: model.path: . has no config.json (not a folder saved by save_pretrained)"),
    "model_given_twice": ({"model": {"name": "m", "hub": "FacebookAI/roberta-base", "build": {"hidden_size": 8}}},
                          "config.yaml: model: hub and build given at once; give one of hub, path, build"),
    "doc_stride_default_with_span_task": ({"doc_stride": None, "max_length": 64},
                                          "config.yaml: doc_stride: 128 (the default) must be smaller than max_length (64)"),
    "doc_stride_too_large": ({"doc_stride": 64},
                             "config.yaml: doc_stride: 64 must be smaller than max_length (64)"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_mistake_stops_before_any_job(tmp_path, case):
    changes, expected = CONFIG_CASES[case]
    workdir = make_workdir(tmp_path, demo_with(**changes))
    code, line, result = run_workflow(workdir)
    assert (code, line) == (1, f"Config error: {expected}")
    assert_no_job_started(workdir, result)


def test_doc_stride_is_not_checked_without_span_tasks(tmp_path):
    config = demo_with(doc_stride=None, max_length=32, **SPANLESS)
    result = snakemake(make_workdir(tmp_path, config), "-n")
    assert result.returncode == 0, result.stderr


def test_error_names_the_configfile_the_value_came_from(tmp_path):
    workdir = make_workdir(tmp_path / "wd")
    (tmp_path / "mine.yaml").write_text("prefinetune:\n  lr: 2e-3\n")
    code, line, result = run_workflow(workdir, "--configfile", str(tmp_path / "mine.yaml"))
    assert (code, line) == (1, f"Config error: {tmp_path}/mine.yaml: prefinetune.lr: '2e-3' is text, not a number "
                               "(YAML reads 2e-3 as a string); write 2.0e-3")
    assert_no_job_started(workdir, result)


def test_configfile_switches_the_model(tmp_path):
    """A --configfile's model section (hub, path or build) replaces the default config's, not adds to it."""
    model = tmp_path / "my_model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"model": {"name": "mine", "path": str(model)}}))
    result = snakemake(make_workdir(tmp_path / "wd"), "-n", "--configfile", str(tmp_path / "mine.yaml"))
    assert result.returncode == 0, result.stderr
    assert "resources/models/mine" in result.stdout and "tiny-roberta" not in result.stdout


def test_model_given_twice_in_a_configfile_names_that_file(tmp_path):
    workdir = make_workdir(tmp_path / "wd")
    model = {"name": "mine", "hub": "FacebookAI/roberta-base", "build": {"hidden_size": 8}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"model": model}))
    code, line, result = run_workflow(workdir, "--configfile", str(tmp_path / "mine.yaml"))
    assert (code, line) == (1, f"Config error: {tmp_path}/mine.yaml: model: hub and build given at once; "
                               "give one of hub, path, build")
    assert_no_job_started(workdir, result)


def test_yaml_error_in_config_names_file_line_and_column(tmp_path):
    workdir = make_workdir(tmp_path)
    text = (tmp_path / "config.yaml").read_text().replace("draws: 2", "draws: [2", 1)
    (tmp_path / "config.yaml").write_text(text)
    line_number = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("draws:"))
    code, line, result = run_workflow(workdir)
    # PyYAML notices the open list on the next line, at its first key's colon
    assert (code, line) == (1, f"Config error: config.yaml: line {line_number + 1}, column 5: expected ',' or ']', but got ':'")
    assert_no_job_started(workdir, result)


def test_yaml_error_in_registry_names_file_line_and_column(tmp_path):
    registry = tmp_path / "tasks.yaml"
    registry.write_text((REPO / "demo" / "tasks.yaml").read_text().replace("type: classification", "type: [classification", 1))
    workdir = make_workdir(tmp_path / "wd", demo_with(registry=str(registry)))
    code, line, result = run_workflow(workdir)
    # line 6 opens the list; PyYAML notices on line 7 (text: [sentence]), at its colon
    assert (code, line) == (1, f"Config error: {registry}: line 7, column 7: expected ',' or ']', but got ':'")
    assert "common.smk" not in result.stderr
    assert_no_job_started(workdir, result)


def test_float_in_the_registry_names_the_registry_file(tmp_path):
    registry = tmp_path / "tasks.yaml"
    registry.write_text((REPO / "demo" / "tasks.yaml").read_text().replace("num_labels: 2\n", "num_labels: 2.0\n", 1))
    workdir = make_workdir(tmp_path / "wd", demo_with(registry=str(registry)))
    code, line, result = run_workflow(workdir)
    assert (code, line) == (1, f"Config error: {registry}: syn_01.num_labels: 2.0 is a float where a whole number "
                               "belongs; write 2")
    assert_no_job_started(workdir, result)


# -- stopping Snakemake with SIGTERM (README, "Stopping a run") -----------------------------------------------------
def test_sigterm_lets_running_jobs_finish_then_exits_1_and_a_rerun_continues(tmp_path):
    workdir = make_workdir(tmp_path)
    targets = ["resources/datasets/syn_01", "resources/datasets/syn_02"]
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1", *targets]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    log = workdir / "logs" / "download"
    deadline = time.monotonic() + 120
    while not (log.is_dir() and any(log.iterdir())) and time.monotonic() < deadline:  # the first job has started
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "Will exit after finishing currently running jobs" in output
    assert "1 of 2 steps (50%) done" in output and "Error in rule" not in output, output
    finished = [t for t in targets if (workdir / t).is_dir()]
    assert len(finished) == 1 and datasets.load_from_disk(str(workdir / finished[0]))["train"].num_rows > 0
    rerun = snakemake(workdir, "--cores", "1", *targets)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 of 1 steps (100%) done" in rerun.stderr + rerun.stdout
