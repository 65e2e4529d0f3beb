"""What the Slurm integration tests share: is a cluster there, the test profile, and Slurm's accounting.

The tests need a running cluster: `tests/slurm/cluster.sh start` (.ci/run starts and stops it). Without one
they are skipped, unless PREFINETUNE_REQUIRE_SLURM=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import time

import pandas as pd
import pytest
import yaml

from workflow_helpers import REPO

# The test cluster's values for the profile's placeholders (tests/slurm/cluster.sh creates them).
TEST_CLUSTER = {
    "<EDIT: your Slurm account>": "ci",
    "<EDIT: CPU partition>": "cpu",
    "<EDIT: GPU partition>": "gpu",
}
# Settings only a test cluster needs: jobs take seconds here, so check their states after 2 s, not 40 s.
TEST_ONLY = {"slurm-init-seconds-before-status-checks": 2}
SACCT_FIELDS = ["JobID", "JobName", "Comment", "Account", "Partition", "ReqTRES", "AllocTRES", "Timelimit", "Submit",
                "End", "State", "ExitCode", "NodeList", "WorkDir"]


def _cluster_reachable() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


# Decided when a module is collected, so that a skip costs nothing (no local demo run either).
NO_CLUSTER = None if _cluster_reachable() else \
    "no Slurm cluster reachable (sinfo failed); start one with: tests/slurm/cluster.sh start (as root)"
REQUIRED = os.environ.get("PREFINETUNE_REQUIRE_SLURM") == "1"  # .ci/run: no cluster is a failure, not a skip
MARKS = [pytest.mark.slurm, pytest.mark.slow,
         pytest.mark.skipif(NO_CLUSTER is not None and not REQUIRED, reason=str(NO_CLUSTER))]


def require_cluster() -> None:
    assert NO_CLUSTER is None, f"PREFINETUNE_REQUIRE_SLURM=1, but {NO_CLUSTER}"


def limits() -> dict[str, int]:
    """The test cluster's limits (tests/slurm/cluster.sh): MaxArraySize, and the user's MaxSubmitJobs."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assoc = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={getpass.getuser()}",
                            f"account={TEST_CLUSTER['<EDIT: your Slurm account>']}", "format=MaxSubmit"],
                           capture_output=True, text=True, check=True).stdout
    return {"MaxArraySize": int(re.search(r"MaxArraySize\s*=\s*(\d+)", config).group(1)),
            "MaxSubmitJobs": int(assoc.split()[0])}


def write_test_profile(directory, set_resources: dict | None = None, jobs: int | None = None) -> dict:
    """slurm/config.yaml with the test cluster's values in its placeholders, plus TEST_ONLY, and `jobs` at the
    cluster's MaxSubmitJobs unless given (the run checks it at its start); ``set_resources`` changes single keys
    of rules under set-resources."""
    text = (REPO / "slurm" / "config.yaml").read_text()
    for placeholder, value in TEST_CLUSTER.items():
        assert f'"{placeholder}"' in text, f"slurm/config.yaml no longer has the placeholder {placeholder!r}"
        text = text.replace(f'"{placeholder}"', value)
    profile = yaml.safe_load(text) | TEST_ONLY | {"jobs": jobs or limits()["MaxSubmitJobs"]}
    for rule, values in (set_resources or {}).items():
        profile["set-resources"][rule].update(values)
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def sacct(since: str) -> pd.DataFrame:
    """Every job (allocation, not its steps) submitted since `since`, one row each, all fields as text."""
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "-o", ",".join(SACCT_FIELDS)],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    jobs = pd.DataFrame(rows, columns=SACCT_FIELDS, dtype=str)
    jobs["rule"] = jobs.Comment.str.extract(r"^rule_([a-z_]+?)(?:_wildcards_.*)?$", expand=False)
    return jobs


def accounted_jobs(since: str, count: int, rule: str | None = None, seconds: int = 30) -> pd.DataFrame:
    """sacct(since), only ``rule``'s jobs if given, once it has ``count`` of them with their requested and
    allocated resources recorded (slurmdbd may lag behind slurmctld); what it has after ``seconds`` otherwise."""
    for _ in range(seconds):
        jobs = sacct(since)
        if rule is not None:
            jobs = jobs[jobs.rule == rule]
        if len(jobs) >= count and not ((jobs.ReqTRES == "") | (jobs.AllocTRES == "")).any():
            break
        time.sleep(1)
    return jobs


def job_steps(job_id: str) -> pd.DataFrame:
    """The steps of one job (batch, extern, 0, 1, ...): JobID, NodeList, NTasks, State, ExitCode."""
    fields = ["JobID", "NodeList", "NTasks", "State", "ExitCode"]
    out = subprocess.run(["sacct", "-P", "-n", "-j", job_id, "-o", ",".join(fields)], capture_output=True,
                         text=True, check=True).stdout
    return pd.DataFrame([line.split("|") for line in out.splitlines() if line], columns=fields, dtype=str)


def tres(text: str) -> dict[str, str]:
    """'cpu=1,gres/gpu=1,mem=2000M' -> {'cpu': '1', 'gres/gpu': '1', 'mem': '2000M'}"""
    return dict(item.split("=", 1) for item in text.split(",") if item)
