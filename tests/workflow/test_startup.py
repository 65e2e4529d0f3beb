"""The Snakemake process stays light: on a cluster it runs for every job's Slurm step and for the controller, so
parsing the workflow and building its DAG import neither torch nor transformers (nor datasets), also once the
model and tokenized data exist and the plan reads its parameters and token counts from them."""

from __future__ import annotations

import re
import subprocess
import sys

from prefinetune.config import Experiment
from prefinetune.data import download, tokenize
from prefinetune.models import fetch, texts_of
from workflow_helpers import REPO, expected_counts, load_config, make_workdir

HEAVY = ("torch", "transformers", "datasets")


def test_building_the_dag_imports_neither_torch_nor_transformers(tmp_path):
    workdir = make_workdir(tmp_path / "work")
    exp = Experiment.from_config(load_config(), REPO)
    task = exp.tasks[exp.config["pool"][0]]
    model = workdir / "resources/models" / exp.config["model"]["name"]
    download(task, tmp_path / "raw", REPO)
    fetch(exp.config["model"], model, texts=texts_of([tmp_path / "raw"]))
    tokenize(task, tmp_path / "raw", model, workdir / "results/tokenized" / model.name / task.name,
             exp.config["max_length"], exp.config["doc_stride"])
    cmd = [sys.executable, "-X", "importtime", "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(workdir), "-n"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = set(re.findall(r"^import time:.*\|\s+([\w.]+)$", result.stderr, re.M))
    assert "snakemake.workflow" in imported and "prefinetune.plan" in imported  # the listing is the real one
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    # ... and yet the plan priced the training jobs from the model's parameters: the demo's 8-minute floor, not the
    # 10-minute runtime that a job asks for while its model's size is unknown
    runtimes = re.findall(r"runtime=(\d+)", result.stdout)
    counts = expected_counts(exp.config)
    jobs = sum(n for rule, n in counts.items() if rule.startswith(("prefinetune", "finetune")))
    assert len(runtimes) == jobs and set(runtimes) == {"8"}
