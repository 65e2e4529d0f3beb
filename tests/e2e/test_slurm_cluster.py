"""The embedded default through Snakemake's Slurm executor, on a real single-node Slurm cluster.

The run uses the profile users run (slurm/config.yaml), changed only where the test cluster must differ: its
account and partitions fill the EDIT placeholders, and the first status check comes after 2 s instead of 40.
Then Slurm's own accounting (sacct) must show every non-local job submitted through sbatch with the requested
partition, account, CPUs, memory, time limit (the plan's estimate of the job, not a fixed value) and GPU, and
completed; the fine-tuning jobs as job arrays, each array with one time limit; the jobs run by the Python that
runs Snakemake; and the outputs must equal a local run's.

Needs a running cluster (see slurm_helpers).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

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
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall_s = time.monotonic() - start
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    # The submitted jobs, from Slurm's accounting; slurmdbd may lag behind slurmctld by a moment.
    expected = sum(n for rule, n in job_counts(_dry_run(workdir)).items() if rule in NON_LOCAL)
    jobs = accounted_jobs(since, expected)
    return {"workdir": workdir, "profile": profile, "jobs": jobs, "log": result.stderr, "wall_s": wall_s}


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


def _asked_minutes(workdir, rule: str) -> int:
    """What the demo's jobs of ``rule`` should ask for, computed here from the finished run's own data: the plan's
    estimate of each job (real token counts, the built model's parameters, the assumed throughput) x the safety
    factor + 5 minutes, at least the floor, at most the config's runtime; the rule's longest for the fine-tuning
    rules (arrays). The demo's jobs are seconds of work: all ask for the floor, below the config's runtime."""
    from prefinetune.config import DEFAULT_PLAN, Experiment
    from prefinetune.plan import exact_size, job_work, model_parameters, tokens_per_second, training_jobs

    config = load_config()
    exp = Experiment.from_config(config, REPO)
    throughput = {**DEFAULT_PLAN, **config["plan"]}
    model = workdir / "resources/models" / config["model"]["name"]
    rate = tokens_per_second(throughput, model_parameters(model))[0]
    sizes = {t: exact_size(workdir / "results/tokenized" / config["model"]["name"] / t) for t in exp.used_tasks
             if (workdir / "results/tokenized" / config["model"]["name"] / t).exists()}
    stage = "prefinetune" if rule == "prefinetune" else "finetune"
    limit, floor = _runtime_minutes(config["resources"][stage]["runtime"]), _runtime_minutes(throughput["runtime_floor"])
    asked = [min(limit, max(floor, math.ceil(job_work(job, sizes)[1] / rate / 3600 * 60 * throughput["runtime_safety"] + 5)))
             for job in training_jobs(exp) if job["rule"] == rule and job["variant"] == "main"]
    assert len(set(asked)) == 1 and asked[0] < limit  # the demo: every job asks for the floor, under the limit
    return asked[0]


@pytest.mark.parametrize("rule, resources", [("prefinetune", "prefinetune"), ("finetune", "finetune"),
                                             ("finetune_baseline", "finetune")])
def test_training_jobs_got_the_requested_gpu_cpus_memory_and_time(slurm_run, rule, resources):
    wanted = load_config()["resources"][resources]  # the demo's requests (rules/*.smk read them)
    assert wanted["gpus"] >= 1, "the demo must request a GPU, or this test checks nothing about GPUs"
    jobs = slurm_run["jobs"][slurm_run["jobs"].rule == rule]
    assert len(jobs) > 0
    asked = _asked_minutes(slurm_run["workdir"], rule)  # the plan's estimate, not the config's fixed runtime
    for _, job in jobs.iterrows():
        requested, allocated = tres(job.ReqTRES), tres(job.AllocTRES)
        assert requested.get("gres/gpu") == allocated.get("gres/gpu") == str(wanted["gpus"]), job.to_dict()
        assert requested["cpu"] == allocated["cpu"] == str(wanted["threads"]), job.to_dict()
        assert requested["mem"] == f"{wanted['mem_mb']}M", job.to_dict()
        assert _minutes(job.Timelimit) == asked, job.to_dict()
        assert job.Partition == TEST_CLUSTER["<EDIT: GPU partition>"]


def _submissions(jobs) -> int:
    """sbatch calls behind these jobs: an array's tasks (JobID <array>_<task>) share one."""
    return jobs.JobID.str.split("_").str[0].nunique()


def test_fine_tuning_went_as_job_arrays_and_pre_finetuning_one_by_one(slurm_run):
    """The profile's slurm-array-jobs: each wave of ready fine-tuning jobs of one rule is one sbatch (an array),
    its tasks with one time limit; pre-finetuning and tokenizing, one sbatch per job. Prints the counts."""
    jobs = slurm_run["jobs"]
    fine = jobs[jobs.rule.isin(["finetune", "finetune_baseline"])]
    assert fine.JobID.str.fullmatch(r"\d+_\d+").all(), fine.JobID.tolist()  # array tasks
    assert _submissions(fine) < len(fine) / 2  # the 8 models' 4 runs each, and the 4 baseline runs
    for _, tasks in fine.groupby(fine.JobID.str.split("_").str[0]):
        assert tasks.rule.nunique() == 1 and tasks.Timelimit.nunique() == 1 and len(tasks) > 1, tasks.to_dict()
    single = jobs[jobs.rule.isin(["prefinetune", "tokenize"])]
    assert single.JobID.str.fullmatch(r"\d+").all() and _submissions(single) == len(single)
    print(f"\nSlurm run of the embedded default with job arrays: {slurm_run['wall_s']:.0f} s wall; "
          f"{_submissions(jobs)} sbatch submissions for {len(jobs)} Slurm jobs (without arrays: {len(jobs)}); "
          f"fine-tuning: {_submissions(fine)} arrays for {len(fine)} jobs")


def test_jobs_ran_with_the_python_that_runs_snakemake(slurm_run):
    """The executor starts every job with the Python that runs Snakemake (here the test's environment; on a
    cluster the shared venv of the README), and the job's script runs with it: its log header names it."""
    workdir = slurm_run["workdir"]
    for log in ("logs/results/prefinetune/k3/draw1.log", "logs/results/finetune/k0/syn_target_pair/seed1.log"):
        header = (workdir / log).read_text().splitlines()[0]
        assert ", Slurm job " in header, header
        python = Path(header.rsplit(", Python ", 1)[1].removesuffix(" ==="))
        assert python.parent == Path(SNAKEMAKE).parent == Path(sys.executable).parent, header


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
    assert len([p for p in metrics if p.parts[0] != "null"]) == len(table)  # and the null arm's runs
    for path in metrics:
        assert json.loads((slurm / path).read_text()) == json.loads((local / path).read_text()), path
    assert (slurm / "scaling_curve.pdf").read_bytes().startswith(b"%PDF")
