"""The embedded default through Snakemake's Slurm executor, on a real single-node Slurm cluster.

The run uses the profile users run (slurm/config.yaml), changed only where the test cluster must differ: its
account and partitions fill the EDIT placeholders, and the first status check comes after 2 s instead of 40.
Then Slurm's own accounting (sacct) must show every non-local job submitted through sbatch with the requested
partition, account, CPUs, memory, time limit and GPU, and completed; and the outputs must equal a local run's.

Needs a running cluster (see slurm_helpers).
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime

import pandas as pd
import pytest

from slurm_helpers import MARKS, TEST_CLUSTER, accounted_jobs, require_cluster, tres, write_test_profile
from workflow_helpers import REPO, SNAKEMAKE, job_counts, load_config, make_workdir


TIME_LIMIT_S = 1500  # the whole run; Snakemake gets SIGINT then (it cancels its Slurm jobs), SIGKILL 60 s later
pytestmark = MARKS


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    require_cluster()
    tmp = tmp_path_factory.mktemp("slurm")
    workdir = make_workdir(tmp / "work")
    profile = write_test_profile(tmp / "profile")
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    # Snakemake ignores SIGTERM while jobs run: bound it with SIGINT (cancels its jobs), then SIGKILL.
    cmd = ["timeout", "-s", "INT", "-k", "60", str(TIME_LIMIT_S), SNAKEMAKE, "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--profile", str(tmp / "profile")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    # The submitted jobs, from Slurm's accounting; slurmdbd may lag behind slurmctld by a moment.
    expected = sum(n for rule, n in job_counts(_dry_run(workdir)).items() if rule in NON_LOCAL)
    jobs = accounted_jobs(since, expected)
    return {"workdir": workdir, "profile": profile, "jobs": jobs, "log": result.stderr}


# Rules that run as Slurm jobs; the others are `localrules` (downloads, subsets, aggregate, plot) or `all`.
NON_LOCAL = {"tokenize", "prefinetune", "finetune", "finetune_baseline"}


def _dry_run(workdir) -> str:
    """The job counts of the full DAG (a forced dry run of the same working directory)."""
    result = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "-n",
                             "--forceall"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_non_local_job_went_through_sbatch_and_completed(slurm_run):
    jobs, workdir = slurm_run["jobs"], slurm_run["workdir"]
    counts = {rule: n for rule, n in job_counts(_dry_run(workdir)).items() if rule in NON_LOCAL}
    assert jobs.rule.value_counts().to_dict() == counts, jobs[["JobID", "Comment"]].to_string()
    assert jobs.JobName.nunique() == 1  # one Snakemake run: the executor names every job by its run id
    assert (jobs.State == "COMPLETED").all() and (jobs.ExitCode == "0:0").all(), jobs.to_string()
    assert (jobs.Account == TEST_CLUSTER["<EDIT: your Slurm account>"]).all()
    # local rules ran in the Snakemake process, not on the cluster
    assert "rule download_dataset:" in slurm_run["log"] and "download_dataset" not in set(jobs.rule)


def _minutes(limit: str) -> int:
    """sacct Timelimit '[D-]HH:MM:SS' -> minutes"""
    days, _, clock = limit.rpartition("-")
    hours, minutes, seconds = map(int, clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def _runtime_minutes(value: str) -> int:
    number, unit = int(value[:-1]), value[-1]
    return number * {"m": 1, "h": 60, "d": 1440}[unit]


@pytest.mark.parametrize("rule, resources", [("prefinetune", "prefinetune"), ("finetune", "finetune"),
                                             ("finetune_baseline", "finetune")])
def test_training_jobs_got_the_requested_gpu_cpus_memory_and_time(slurm_run, rule, resources):
    wanted = load_config()["resources"][resources]  # the demo's requests (rules/*.smk read them)
    assert wanted["gpus"] >= 1, "the demo must request a GPU, or this test checks nothing about GPUs"
    jobs = slurm_run["jobs"][slurm_run["jobs"].rule == rule]
    assert len(jobs) > 0
    for _, job in jobs.iterrows():
        requested, allocated = tres(job.ReqTRES), tres(job.AllocTRES)
        assert requested.get("gres/gpu") == allocated.get("gres/gpu") == str(wanted["gpus"]), job.to_dict()
        assert requested["cpu"] == allocated["cpu"] == str(wanted["threads"]), job.to_dict()
        assert requested["mem"] == f"{wanted['mem_mb']}M", job.to_dict()
        assert _minutes(job.Timelimit) == _runtime_minutes(wanted["runtime"]), job.to_dict()
        assert job.Partition == TEST_CLUSTER["<EDIT: GPU partition>"]


def test_cpu_jobs_got_the_profile_defaults_and_no_gpu(slurm_run):
    defaults = slurm_run["profile"]["default-resources"]
    jobs = slurm_run["jobs"][slurm_run["jobs"].rule == "tokenize"]
    assert len(jobs) > 0
    for _, job in jobs.iterrows():
        requested = tres(job.ReqTRES)
        assert "gres/gpu" not in requested and requested["cpu"] == "1", job.to_dict()  # tokenize: threads 1
        assert requested["mem"] == f"{defaults['mem_mb']}M", job.to_dict()
        assert _minutes(job.Timelimit) == _runtime_minutes(defaults["runtime"]), job.to_dict()
        assert job.Partition == TEST_CLUSTER["<EDIT: CPU partition>"]


def test_outputs_equal_a_local_run(slurm_run, demo_local):
    slurm, local = slurm_run["workdir"] / "results", demo_local / "results"
    key = ["variant", "k", "draw", "target", "seed"]
    table = pd.read_csv(slurm / "scaling.csv").sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(table, pd.read_csv(local / "scaling.csv").sort_values(key, ignore_index=True))
    metrics = sorted(p.relative_to(slurm) for p in slurm.rglob("metrics.json"))
    assert len(metrics) == len(table)
    for path in metrics:
        assert json.loads((slurm / path).read_text()) == json.loads((local / path).read_text()), path
    assert (slurm / "scaling_curve.pdf").read_bytes().startswith(b"%PDF")
