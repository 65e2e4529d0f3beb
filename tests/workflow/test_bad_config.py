"""Bad input through the real workflow: a bad row stops its download job with one line; a config mistake stops
``snakemake`` itself before any job, with one exact line naming the file and the field. Each runs the real
workflow (not a dry run), so a mistake the check missed would start jobs. Also SIGTERM to Snakemake.
"""

import re
import signal
import subprocess
import time

import datasets
import pytest
import yaml

from data_helpers import jsonl, local_task, sentences
from workflow_helpers import REPO, SNAKEMAKE, load_config, make_workdir, snakemake

pytestmark = pytest.mark.usefixtures("isolated_hf")


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
            "sample_efficiency": None, "null_arm": None}
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
    "reference_named_like_the_model": ({"reference_models": [{"name": "tiny-roberta", "hub": "org/m"}]},
                                       "config.yaml: reference_models[0].name: tiny-roberta is the model's own name; "
                                       "every model needs a name of its own (it names its folders: resources/models/"
                                       "<name>, results/tokenized/<name>, results/reference/<name>)"),
    "reference_path_missing": ({"reference_models": [{"name": "ref", "path": "no/such/model"}]},
                               "config.yaml: reference_models[0].path: no/such/model: no such folder"),
    "runtime_floor_within_the_warning": ({"plan": {"runtime_floor": "5m"}},
                                         "config.yaml: plan.runtime_floor: 5m must be longer than the 5 minutes before "
                                         "a job's time limit in which it only saves a checkpoint (--signal=TERM@300)"),
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
    text = re.sub(r"^draws: 3.*$", "draws: [3", (tmp_path / "config.yaml").read_text(), count=1, flags=re.M)
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


# -- stopping Snakemake with SIGTERM (docs/cluster.md, "Stopping a run") ------------------------------------------
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
