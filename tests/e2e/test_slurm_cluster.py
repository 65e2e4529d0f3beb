"""The workflow through Snakemake's Slurm executor and the users' profile, on a Slurm cluster with a site's limits.

The test cluster (tests/slurm/cluster.sh) has small limits, so that a small run exceeds them: MaxArraySize 4 (an
array holds at most 3 tasks) and MaxSubmitJobs 6 (jobs queued or running at once, array tasks included). The run
goes the way docs/cluster.md gives for sites that end long login-node processes: the downloads here (the "login
node", `--until` the download rules), then slurm/controller.sbatch, which runs Snakemake with the profile as a
Slurm job, on node1 (partition `multi`: a host of its own, which leaves localhost's CPUs to the jobs; it submits
and polls over the test cluster's network). The profile is slurm/config.yaml with the test cluster's account and
partitions in its EDIT placeholders, the first status check after 2 s instead of 40, and `jobs` at MaxSubmitJobs
less the controller's own job.

The run: the embedded default with 4 fine-tuning seeds instead of 2, for the fine-tuning runs of one pre-finetuned
model (k = 3, draw 1): its tokenize jobs (CPU), one pre-finetuning job, then 8 fine-tuning jobs, all ready at once
when the model is written: more than MaxSubmitJobs, and more than two arrays hold. Meanwhile the test requeues the
pre-finetuning job (`scontrol requeue`) after its first checkpoint.

Checks: Slurm's accounting shows every job submitted, with the requested partition, account, CPUs, memory, GPU and
time limit (the plan's estimate), and completed; the fine-tuning jobs as arrays numbered from 1 and never beyond
MaxArraySize, never more jobs queued at once than MaxSubmitJobs; the requeued job ran twice and resumed from its
checkpoint to the weights of the uninterrupted local run of the embedded default, and the fine-tuning runs it shares
with that run have its metrics; the jobs ran with the Python that runs Snakemake; the efficiency report was written.
A run whose `jobs` is above MaxSubmitJobs stops at its start, with one line. And the installed plugin, without the
workflow's fixes (src/prefinetune/slurm_plugin.py), still has both faults: when a release fixes them, that test
fails, and the fixes can go.

Needs a running cluster (see slurm_helpers).
"""

from __future__ import annotations

import getpass
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import torch

from slurm_helpers import (MARKS, TEST_CLUSTER, accounted_jobs, limits, require_cluster, sacct, tres,
                           write_test_profile)
from workflow_helpers import REPO, SNAKEMAKE, job_counts, load_config, make_workdir, model_weights

TIME_LIMIT_S = 1500  # the controller job's time limit (Snakemake gets SIGINT 5 min before it); a hung run fails the test
pytestmark = MARKS
SEEDS = 4  # fine-tuning seeds: 2 targets x 4 = 8 jobs ready at once, above MaxSubmitJobs (6)
MODEL = "results/prefinetune/k3/draw1"
ACCOUNT, CPU, GPU = (TEST_CLUSTER[f"<EDIT: {p}>"] for p in ("your Slurm account", "CPU partition", "GPU partition"))
CONTROLLER = "multi"  # the partition of Snakemake's own job: node1, not localhost, where the jobs run
# Rules that run as Slurm jobs here; the others are `localrules` (downloads, subsets).
NON_LOCAL = {"tokenize", "prefinetune", "finetune"}


def config() -> dict:
    """The embedded default with SEEDS fine-tuning seeds (its `resources` as they are)."""
    return load_config() | {"finetune_seeds": SEEDS}


def targets() -> list[str]:
    return [f"results/finetune/k3/draw1/{t}/seed{s}/metrics.json" for t in config()["targets"]
            for s in range(1, SEEDS + 1)]


def snakemake_cli(workdir, profile, *args) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile", str(profile), *args]


def wait_for_job(job_id: str, seconds: int) -> str:
    """The job's final state, once it has left the queue (squeue) and sacct has it."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()
        state = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                               text=True).stdout.split()
        if not queued and state and state[0] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            return state[0]
        time.sleep(2)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} still queued or running after {seconds} s")


def running_job(rule: str, workdir) -> str:
    """The id of ``rule``'s job running in ``workdir``, from slurmctld (squeue)."""
    out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i|%k|%Z"], capture_output=True, text=True,
                         check=True).stdout
    ids = [i for i, comment, cwd in (line.split("|") for line in out.splitlines())
           if comment.startswith(f"rule_{rule}_") and cwd == str(workdir)]
    assert len(ids) == 1, out
    return ids[0]


def requeue_after_first_checkpoint(workdir, controller: str) -> str:
    """Requeue (scontrol requeue) the pre-finetuning job once its first checkpoint exists; its job id."""
    state = workdir / "checkpoints" / MODEL / "state.pt"
    deadline = time.time() + 600
    while not state.exists():
        assert time.time() < deadline, "no checkpoint appeared"
        assert subprocess.run(["squeue", "-h", "-j", controller], capture_output=True, text=True).stdout.strip(), \
            "the controller job ended before the pre-finetuning job's first checkpoint"
        time.sleep(0.2)
    job = running_job("prefinetune", workdir)
    subprocess.run(["scontrol", "requeue", job], check=True)  # runs again after cred_expire (slurm.conf.in)
    return job


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    require_cluster()
    cluster = limits()
    assert cluster == {"MaxArraySize": 4, "MaxSubmitJobs": 6}, f"the test cluster's limits changed: {cluster}"
    tmp = tmp_path_factory.mktemp("slurm")
    workdir = make_workdir(tmp / "work", config())
    profile = write_test_profile(tmp / "profile", jobs=cluster["MaxSubmitJobs"] - 1)  # the controller is a job too
    start = time.monotonic()
    # 1. The login node: the downloads, which need the internet that compute nodes lack.
    login = subprocess.run(snakemake_cli(workdir, tmp / "profile", "--until", "download_dataset", "download_model",
                                         *targets()), capture_output=True, text=True, cwd=REPO)
    assert login.returncode == 0, login.stderr[-3000:]
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    # 2. Snakemake as a Slurm job: slurm/controller.sbatch, from the repository root, passing on this environment
    # (the venv's snakemake first on PATH); the test profile comes after the script's own --profile slurm.
    env = {**os.environ, "PATH": f"{Path(SNAKEMAKE).parent}:{os.environ['PATH']}"}
    log = tmp / "controller.log"
    controller = subprocess.run(
        ["sbatch", "--parsable", "-A", ACCOUNT, "-p", CONTROLLER, "--cpus-per-task=1",
         "--time", f"{TIME_LIMIT_S // 60}", "--output", str(log), "slurm/controller.sbatch",
         "--profile", str(tmp / "profile"), "--directory", str(workdir), *targets()], capture_output=True, text=True, cwd=REPO, env=env, check=True)
    controller_id = controller.stdout.strip().split(";")[0]
    requeued = requeue_after_first_checkpoint(workdir, controller_id)
    state = wait_for_job(controller_id, TIME_LIMIT_S + 120)
    wall_s = time.monotonic() - start
    assert state == "COMPLETED", f"controller job {controller_id}: {state}\n{log.read_text()[-6000:]}"
    expected = sum(n for rule, n in job_counts(_dry_run(workdir)).items() if rule in NON_LOCAL)
    jobs = accounted_jobs(since, expected + 1)
    return {"workdir": workdir, "profile": profile, "jobs": jobs[jobs.JobID != controller_id],
            "controller": jobs[jobs.JobID == controller_id], "log": log.read_text(), "login_log": login.stderr,
            "requeued": requeued, "limits": cluster, "wall_s": wall_s}


def _dry_run(workdir) -> str:
    """The job counts of the run's DAG (a forced dry run of the same working directory)."""
    result = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "-n",
                             "--forceall", *targets()], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _submissions(jobs) -> int:
    """sbatch calls behind these jobs: an array's tasks (JobID <array>_<task>) share one."""
    return jobs.JobID.str.split("_").str[0].nunique()


def test_the_controller_job_submitted_every_job_and_all_completed(slurm_run):
    jobs, workdir = slurm_run["jobs"], slurm_run["workdir"]
    counts = {rule: n for rule, n in job_counts(_dry_run(workdir)).items() if rule in NON_LOCAL}
    assert jobs.rule.value_counts().to_dict() == counts, jobs[["JobID", "Comment"]].to_string()
    assert jobs.JobName.nunique() == 1  # one Snakemake run: the executor names every job by its run id
    assert (jobs.State == "COMPLETED").all() and (jobs.ExitCode == "0:0").all(), jobs.to_string()
    assert (jobs.Account == ACCOUNT).all()
    controller = slurm_run["controller"].iloc[0]
    assert (controller.State, controller.Partition, controller.JobName) == ("COMPLETED", CONTROLLER,
                                                                            "prefinetune-snakemake")
    # the downloads ran on the login node, before the controller job; nothing is downloaded inside it
    assert "rule download_dataset:" in slurm_run["login_log"] and "rule download_dataset:" not in slurm_run["log"]
    assert "download_dataset" not in set(jobs.rule) and "rule tokenize:" not in slurm_run["login_log"]
    print(f"\nSlurm run (controller job, limits {slurm_run['limits']}): {slurm_run['wall_s']:.0f} s wall from the "
          f"downloads to the end; {_submissions(jobs)} sbatch submissions for {len(jobs)} Slurm jobs, plus the "
          f"controller's own")


def test_arrays_above_max_array_size_and_jobs_above_max_submit_jobs_all_ran(slurm_run):
    """8 fine-tuning jobs ready at once, above MaxSubmitJobs (6) and more than two arrays hold (MaxArraySize 4):
    every one ran, in arrays numbered from 1 below MaxArraySize, the ones Snakemake held back later; never more
    jobs queued or running at once than MaxSubmitJobs."""
    jobs, cluster = slurm_run["jobs"], slurm_run["limits"]
    fine = jobs[jobs.rule == "finetune"]
    assert len(fine) == 2 * SEEDS > cluster["MaxSubmitJobs"]  # ready at once when the model was written
    assert (fine.State == "COMPLETED").all(), fine.to_string()
    tasks = fine.JobID.str.extract(r"^(\d+)(?:_(\d+))?$")
    assert tasks[0].notna().all(), fine.JobID.tolist()
    for _, array in tasks.dropna().groupby(0):  # the array's tasks are 1..n, n below MaxArraySize
        indices = sorted(int(i) for i in array[1])
        assert indices == list(range(1, len(indices) + 1)) and indices[-1] < cluster["MaxArraySize"], indices
    assert (tasks[1].dropna().astype(int) < cluster["MaxArraySize"]).all()
    # Snakemake handed over `jobs` of them at once; the others waited until a fine-tuning job had ended
    handed = fine.Submit < fine.End.min()
    assert handed.sum() == slurm_run["profile"]["jobs"] and (~handed).sum() == len(fine) - handed.sum() > 0, \
        fine[["JobID", "Submit", "End"]].to_string()
    assert tasks[0][handed].nunique() >= math.ceil(handed.sum() / (cluster["MaxArraySize"] - 1)) > 1
    # never more jobs queued or running at once than MaxSubmitJobs (the controller's own job included)
    everything = pd.concat([jobs, slurm_run["controller"]])
    events = sorted([(t, +1) for t in everything.Submit] + [(t, -1) for t in everything.End])
    assert max(pd.Series([step for _, step in events]).cumsum()) <= cluster["MaxSubmitJobs"]
    single = jobs[jobs.rule.isin(["prefinetune", "tokenize"])]
    assert single.JobID.str.fullmatch(r"\d+").all() and _submissions(single) == len(single)
    print(f"\nfine-tuning: {len(fine)} jobs in {tasks[0].nunique()} sbatch submissions "
          f"({tasks[1].notna().sum()} as array tasks); all jobs: {_submissions(jobs)} sbatch for {len(jobs)}")


def test_the_requeued_pre_finetuning_job_resumed_to_the_weights_of_an_uninterrupted_run(slurm_run, demo_local):
    workdir, job = slurm_run["workdir"], slurm_run["requeued"]
    runs = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-j", job, "-o", "State"], capture_output=True,
                          text=True, check=True).stdout.split()
    assert runs == ["REQUEUED", "COMPLETED"], runs  # one job id, run twice
    summary = json.loads((workdir / MODEL / "model/prefinetune.json").read_text())
    assert summary["resumed_after"] > 0, summary
    log = (workdir / "logs" / f"{MODEL}.log").read_text()
    assert f"resuming from checkpoints/{MODEL} after update {summary['resumed_after']}" in log, log[-3000:]
    assert not (workdir / "checkpoints" / MODEL).exists()  # removed once the model is written
    resumed, uninterrupted = model_weights(workdir / MODEL / "model"), model_weights(demo_local / MODEL / "model")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), f"resumed after {summary['resumed_after']}"
    assert train_log(workdir) == train_log(demo_local)


def train_log(workdir) -> list[list[str]]:
    """The model's loss log: step, loss, lr, tasks in the update (the seconds, a timing, dropped)."""
    return [row.split("\t")[:4] for row in (workdir / MODEL / "train_log.tsv").read_text().splitlines()]


def test_fine_tuning_outputs_equal_the_local_run(slurm_run, demo_local):
    """The runs the two share (seeds 1 and 2 of every target) have the same metrics."""
    workdir = slurm_run["workdir"]
    shared = [t for t in targets() if (demo_local / t).exists()]
    assert len(shared) == 2 * load_config()["finetune_seeds"]
    for path in shared:
        assert json.loads((workdir / path).read_text()) == json.loads((demo_local / path).read_text()), path


def _runtime_minutes(value: str) -> int:
    number, unit = int(value[:-1]), value[-1]
    return number * {"m": 1, "h": 60, "d": 1440}[unit]


def _minutes(limit: str) -> int:
    """sacct Timelimit '[D-]HH:MM:SS' -> minutes"""
    days, _, clock = limit.rpartition("-")
    hours, minutes, seconds = map(int, clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def _asked_minutes(workdir, rule: str) -> int:
    """What the run's jobs of ``rule`` should ask for, computed here from the finished run's own data: the plan's
    estimate of each job (real token counts, the built model's parameters, the assumed throughput) x the safety
    factor + 5 minutes, at least the floor, at most the config's runtime; the rule's longest for the fine-tuning
    rules (arrays). The demo's jobs are seconds of work: all ask for the floor, below the config's runtime."""
    from prefinetune.config import DEFAULT_PLAN, Experiment
    from prefinetune.plan import exact_size, job_work, model_parameters, tokens_per_second, training_jobs

    exp = Experiment.from_config(config(), REPO)
    throughput = {**DEFAULT_PLAN, **exp.config["plan"]}
    model = workdir / "resources/models" / exp.config["model"]["name"]
    rate = tokens_per_second(throughput, model_parameters(model))[0]
    tokenized = workdir / "results/tokenized" / exp.config["model"]["name"]
    sizes = {t: exact_size(tokenized / t) for t in exp.used_tasks if (tokenized / t).exists()}
    stage = "prefinetune" if rule == "prefinetune" else "finetune"
    limit = _runtime_minutes(exp.config["resources"][stage]["runtime"])
    floor = _runtime_minutes(throughput["runtime_floor"])
    run = [job for job in training_jobs(exp) if job["rule"] == rule and job["variant"] == "main"
           and (job["k"], job["draw"]) == (3, 1)]  # the run's jobs (the others' data is not tokenized here)
    hours = [job_work(job, sizes)[1] / rate / 3600 for job in run]
    asked = [min(limit, max(floor, math.ceil(h * 60 * throughput["runtime_safety"] + 5))) for h in hours]
    assert len(set(asked)) == 1 and asked[0] < limit  # the demo: every job asks for the floor, under the limit
    return asked[0]


@pytest.mark.parametrize("rule, resources", [("prefinetune", "prefinetune"), ("finetune", "finetune")])
def test_training_jobs_got_the_requested_gpu_cpus_memory_and_time(slurm_run, rule, resources):
    wanted = config()["resources"][resources]  # the demo's requests (rules/*.smk read them)
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
        assert job.Partition == GPU


def test_cpu_jobs_got_the_profile_defaults_and_no_gpu(slurm_run):
    defaults = slurm_run["profile"]["default-resources"]
    jobs = slurm_run["jobs"][slurm_run["jobs"].rule == "tokenize"]
    assert len(jobs) > 0
    for _, job in jobs.iterrows():
        requested = tres(job.ReqTRES)
        assert "gres/gpu" not in requested and requested["cpu"] == "1", job.to_dict()  # tokenize: threads 1
        assert requested["mem"] == f"{defaults['mem_mb']}M", job.to_dict()
        assert _minutes(job.Timelimit) == _runtime_minutes(defaults["runtime"]), job.to_dict()
        assert job.Partition == CPU


def test_jobs_ran_with_the_python_that_runs_snakemake(slurm_run):
    """The executor starts every job with the Python that runs Snakemake (here the test's environment, passed on
    to the controller job; on a cluster the shared venv of the README), and the job's script runs with it: its log
    header names it."""
    workdir = slurm_run["workdir"]
    target = config()["targets"][0]
    for log in (f"logs/{MODEL}.log", f"logs/results/finetune/k3/draw1/{target}/seed1.log"):
        header = (workdir / log).read_text().splitlines()[0]
        assert ", Slurm job " in header, header
        python = Path(header.rsplit(", Python ", 1)[1].removesuffix(" ==="))
        assert python.parent == Path(SNAKEMAKE).parent == Path(sys.executable).parent, header


def test_the_efficiency_report_lands_under_logs(slurm_run):
    """The profile's slurm-efficiency-report: one CSV per run under logs/slurm_efficiency/, a row per job step
    with its rule, CPU efficiency and memory use."""
    reports = list((slurm_run["workdir"] / "logs" / "slurm_efficiency").glob("efficiency_report_*.csv"))
    assert len(reports) == 1, reports
    report = pd.read_csv(reports[0])
    assert {"RuleName", "CPU Efficiency (%)", "Memory Usage (%)"} <= set(report.columns)
    assert {"rule_prefinetune", "rule_finetune", "rule_tokenize"} <= {r.split("_wildcards")[0] for r in report.RuleName}
    assert f"saved to {reports[0].relative_to(slurm_run['workdir'])}" in slurm_run["log"]


def test_a_run_whose_jobs_exceed_max_submit_jobs_stops_at_its_start(slurm_run):
    """`jobs` above the user's MaxSubmitJobs: the run stops before it submits anything, with one line."""
    limit = slurm_run["limits"]["MaxSubmitJobs"]
    result = subprocess.run(snakemake_cli(slurm_run["workdir"], slurm_run["workdir"].parent / "profile",
                                          targets()[0], "--jobs", str(limit + 1), "--forcerun", "finetune"),
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    line = (f"jobs {limit + 1} (slurm/config.yaml, or --jobs) is more than Slurm lets you queue at once "
            f"(MaxSubmitJobs {limit} of user {getpass.getuser()}, account {ACCOUNT}): set jobs to {limit} or less")
    assert line in result.stderr.splitlines(), result.stderr[-3000:]
    assert "submitted" not in result.stderr.lower() and "Traceback" not in result.stderr


# -- the installed plugin without the workflow's fixes --------------------------------------------------------------
PLAIN = REPO / "tests" / "slurm" / "plain_arrays" / "Snakefile"


def plain_run(tmp_path, jobs: int, count: int) -> subprocess.Popen:
    """tests/slurm/plain_arrays/Snakefile: ``count`` one-line jobs of one rule, submitted as job arrays by the
    installed plugin as it is (that workflow does not load prefinetune.slurm_plugin), at most ``jobs`` at once."""
    tmp_path.mkdir()
    cmd = [SNAKEMAKE, "-s", str(PLAIN), "--directory", str(tmp_path), "--config", f"count={count}",
           "--executor", "slurm", "--jobs", str(jobs), "--slurm-array-jobs", "echo",
           "--slurm-init-seconds-before-status-checks", "1", "--default-resources", f"slurm_account={ACCOUNT}",
           f"slurm_partition={CPU}", "runtime=5", "mem_mb=100"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)


def test_without_the_fixes_the_installed_plugin_still_has_both_faults(tmp_path):
    """If this fails, a plugin release has fixed its job arrays: remove the fixes of src/prefinetune/slurm_plugin.py
    (fix_job_arrays), and this test.
    1. MaxArraySize jobs ready at once: the plugin sends the second array as --array=<MaxArraySize>-..., which
       Slurm refuses, and the run fails.
    2. 3 jobs ready, `jobs` 1: the plugin keeps back the one job it was handed, and nothing is ever submitted."""
    require_cluster()
    size = limits()["MaxArraySize"]
    run = plain_run(tmp_path / "indices", jobs=size, count=size)
    out, _ = run.communicate(timeout=300)
    assert run.returncode != 0, out[-3000:]
    assert f"SLURM sbatch failed for array job submission (tasks {size}-{size})" in out, out[-3000:]
    assert f"--array={size}-{size}" in out, out[-3000:]

    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    run = plain_run(tmp_path / "held", jobs=1, count=3)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "held" / ".snakemake" / "log").exists() or "Execute 1 jobs" not in \
                "".join(p.read_text() for p in (tmp_path / "held" / ".snakemake" / "log").glob("*.log")):
            assert run.poll() is None and time.time() < deadline, "the run did not hand a job to the plugin"
            time.sleep(0.5)
        time.sleep(15)  # a submission takes a second; the fixed plugin's first job would be running by now
        assert run.poll() is None, "the run ended"
        submitted = sacct(since)
        assert submitted[submitted.WorkDir == str(tmp_path / "held")].empty, submitted.to_string()
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # Snakemake may wait on for the job it handed over, which never ran
            run.kill()
            run.communicate()
