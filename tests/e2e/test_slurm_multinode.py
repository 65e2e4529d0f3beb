"""Pre-finetuning on two nodes of a real Slurm cluster, through Snakemake and the users' profile.

The test cluster's nodes node1 and node2 are slurmds in network namespaces of their own (tests/slurm/cluster.sh),
so the job's two processes talk gloo over a network between two hosts, as on a real cluster. The config asks
for `resources.prefinetune: {nodes: 2, gpus: 1}`; the profile is the users' one with the test cluster's
values, and the prefinetune partition set to the two-node partition `multi`.

Checks: Slurm's accounting shows one job on both nodes, with a GPU each, whose training step ran one task
(torchrun) per node; the model's summary names both hosts; and the weights equal those of one process
trained locally on the same global batches (dropout off: each process draws its own masks). Another run
is stopped by SIGTERM to its steps, as Slurm's --signal warning does, after its first checkpoint: the
retried job resumes on two nodes and ends bit-identical to an uninterrupted two-node run.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime

import pytest
import torch
from safetensors.torch import load_file

from slurm_helpers import MARKS, accounted_jobs, job_steps, require_cluster, sacct, tres, write_test_profile
from workflow_helpers import REPO, SNAKEMAKE, load_config, make_workdir, model_weights, snakemake, without_dropout

pytestmark = MARKS
TARGET = "results/prefinetune/k3/draw1"
NODES = 2
TIME_LIMIT_S = 600


def experiment(base, nodes: int, max_steps: int) -> dict:
    """The demo on a 4-task pool with the dropout-free model ``base``, ``nodes`` nodes with 1 GPU each."""
    config = load_config()
    config.update(model={"name": "tiny-nodrop", "path": str(base)}, pool=config["pool"][:4], task_counts=[0, 3],
                  null_arm=None)
    config["prefinetune"].update(max_steps=max_steps, dropout=0.0, log_every=1, checkpoint_every=5)
    config["resources"]["prefinetune"].update(nodes=nodes, gpus=1, threads=1)
    return config


def train_log(workdir) -> list[list[str]]:
    """The target's loss log without its header: step, loss, lr, tasks_in_update (seconds dropped)."""
    return [row.split("\t")[:4] for row in (workdir / TARGET / "train_log.tsv").read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dropout-free base model (the demo's tiny RoBERTa, built once) and the test profile."""
    require_cluster()
    tmp = tmp_path_factory.mktemp("multinode")
    build = make_workdir(tmp / "build")
    result = snakemake(build, "--cores", "2", "resources/models/tiny-roberta")
    assert result.returncode == 0, result.stderr[-3000:]
    base = without_dropout(build / "resources/models/tiny-roberta", tmp / "base")
    write_test_profile(tmp / "profile", {"prefinetune": {"slurm_partition": "multi"}})
    return tmp, base


def local_run(tmp, base, max_steps: int):
    """The same experiment on one process, without Slurm."""
    workdir = make_workdir(tmp / f"local{max_steps}", experiment(base, 1, max_steps))
    result = snakemake(workdir, "--cores", "2", f"{TARGET}/model")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def start_slurm_run(tmp, base, max_steps: int, name: str):
    workdir = make_workdir(tmp / name, experiment(base, NODES, max_steps))
    # Snakemake ignores SIGTERM while jobs run: bound it with SIGINT (cancels its jobs), then SIGKILL.
    cmd = ["timeout", "-s", "INT", "-k", "60", str(TIME_LIMIT_S), SNAKEMAKE, "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir), f"{TARGET}/model", "--profile", str(tmp / "profile")]
    return workdir, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def finish(proc) -> str:
    out, err = proc.communicate()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-6000:]}"
    return err


def prefinetune_jobs(since: str, count: int):
    """The prefinetune jobs submitted since ``since``, once Slurm's accounting has all ``count`` of them."""
    jobs = accounted_jobs(since, count, rule="prefinetune")
    assert len(jobs) >= count, f"expected {count} prefinetune jobs in sacct since {since}:\n{sacct(since).to_string()}"
    return jobs.reset_index(drop=True)


# Parameters whose gradient is zero in exact arithmetic: a softmax does not change when the same number is
# added to all of its logits (the span head's start/end bias over a window's tokens; an attention key bias
# over the keys). Their gradients are float noise, which Adam scales up to steps of about lr, so they differ
# between any two summation orders (2e-3 x 30 updates in the demo gave differences up to 6e-4).
SHIFT_INVARIANT = ("heads.span.qa_outputs.bias", "attention.self.key.bias")


def running_prefinetune_job(workdir) -> str:
    """The id of the prefinetune job running in ``workdir``, from slurmctld (squeue; sacct may lag behind)."""
    out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i|%k|%Z"], capture_output=True, text=True,
                         check=True).stdout
    ids = [i for i, comment, cwd in (line.split("|") for line in out.splitlines())
           if comment.startswith("rule_prefinetune_") and cwd == str(workdir)]
    assert len(ids) == 1, out
    return ids[0]


def assert_same_weights(multi_dir, local_dir):
    w_multi, w_local = model_weights(multi_dir), model_weights(local_dir)
    assert w_multi.keys() == w_local.keys()
    compared = [k for k in w_local if not k.endswith(SHIFT_INVARIANT)]
    assert len(compared) > len(w_local) - 4
    for key in compared:
        torch.testing.assert_close(w_multi[key], w_local[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


def test_two_nodes_train_like_one_process(setup):
    tmp, base = setup
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    workdir, proc = start_slurm_run(tmp, base, 30, "multi")
    local = local_run(tmp, base, 30)  # meanwhile, on this machine's CPUs
    finish(proc)

    job = prefinetune_jobs(since, 1).iloc[0]
    allocated = tres(job.AllocTRES)
    assert (job.Partition, job.State, job.ExitCode) == ("multi", "COMPLETED", "0:0"), job.to_dict()
    assert allocated["node"] == str(NODES) and allocated["gres/gpu"] == str(NODES), job.to_dict()  # a GPU per node
    assert job.NodeList == "node[1-2]", job.to_dict()
    steps = job_steps(job.JobID)
    training = steps[steps.JobID == f"{job.JobID}.0"]  # the job's own srun: one torchrun agent per node
    assert len(training) == 1 and training.iloc[0].NodeList == "node[1-2]", steps.to_string()
    assert training.iloc[0].NTasks == str(NODES) and training.iloc[0].State == "COMPLETED", steps.to_string()

    summary = json.loads((workdir / TARGET / "model/prefinetune.json").read_text())
    assert summary["processes"] == NODES and summary["hosts"] == ["node1", "node2"], summary
    local_model = local / TARGET / "model"
    assert json.loads((local_model / "prefinetune.json").read_text())["processes"] == 1
    initial = load_file(str(base / "model.safetensors"))
    moved = max((model_weights(local_model)[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-2  # far beyond the tolerance of the comparison
    assert_same_weights(workdir / TARGET / "model", local_model)
    assert [r[3] for r in train_log(workdir)] == [r[3] for r in train_log(local)]  # the same batches
    assert [float(r[1]) for r in train_log(workdir)] == pytest.approx([float(r[1]) for r in train_log(local)], abs=1e-5)


def test_stopped_on_two_nodes_the_retry_resumes_to_the_weights_of_an_uninterrupted_run(setup):
    """Two two-node runs at once, one of them stopped after its first checkpoint; both must end bit-identical
    (two gloo processes sum gradients in a fixed order, so a two-node run on CPUs is deterministic)."""
    tmp, base = setup
    steps = 200
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    stopped, proc = start_slurm_run(tmp, base, steps, "stopped")
    full, full_proc = start_slurm_run(tmp, base, steps, "full")
    state = stopped / "checkpoints" / TARGET / "state.pt"
    deadline = time.time() + 300
    while not state.exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    # What --signal=TERM@<s> does before the time limit: SIGTERM to the job's steps, not to its batch shell.
    subprocess.run(["scancel", "--signal=TERM", running_prefinetune_job(stopped)], check=True)
    err = finish(proc)
    finish(full_proc)

    jobs = prefinetune_jobs(since, 3)
    tries = jobs[jobs.WorkDir == str(stopped)]
    assert list(tries.State) == ["FAILED", "COMPLETED"], jobs.to_string()  # the retry (profile: retries) resumed
    assert (jobs.NodeList == "node[1-2]").all(), jobs.to_string()
    summary = json.loads((stopped / TARGET / "model/prefinetune.json").read_text())
    assert 5 <= summary["resumed_after"] < steps and summary["hosts"] == ["node1", "node2"], summary
    log = (stopped / "logs" / f"{TARGET}.log").read_text()
    assert f"resuming from checkpoints/{TARGET} after update {summary['resumed_after']} of {steps}" in log, err[-3000:]
    assert not state.parent.exists()  # removed once the model is written
    w_full, w_resumed = model_weights(full / TARGET / "model"), model_weights(stopped / TARGET / "model")
    assert w_full.keys() == w_resumed.keys()
    assert all(torch.equal(w_full[k], w_resumed[k]) for k in w_full), f"resumed after {summary['resumed_after']}"
    assert train_log(stopped) == train_log(full)
