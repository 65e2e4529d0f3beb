"""The Slurm executor plugin (snakemake-executor-plugin-slurm) as this workflow needs it: two fixes of its job
arrays, and the checks that stop a Slurm run at its start, with one line, when the plugin or the profile's `jobs`
does not fit. rules/common.smk calls :func:`fix_job_arrays` in the Snakemake process that submits the jobs.

Plugin 2.8.0 submits the ready jobs of a rule listed in `slurm-array-jobs` as Slurm job arrays, with two faults:

1. **Array indices beyond MaxArraySize.** It cuts a rule's ready jobs into arrays of at most
   ``min(slurm-array-limit, MaxArraySize - 1)`` tasks, but numbers the tasks of all of them in one sequence: the
   second array of 1,458 jobs goes out as ``--array=1001-1458``. Slurm refuses every index at or above
   MaxArraySize (default 1001), so those jobs fail at submission.
   Fix: ``run_array_jobs`` is handed one array's worth of jobs at a time, so each array is numbered from 1.
2. **Jobs lost when Snakemake holds ready jobs back** (plugin issue #473). ``run_jobs`` keeps back the jobs of an
   array rule that it was handed while fewer of them arrived than the rule still has ready (and than one array
   holds), to wait for the rest. Snakemake, however, counts every job it hands over as running and never hands
   it over again: the jobs kept back are never submitted and the run waits forever. Snakemake holds ready jobs
   back whenever `jobs` (or `max-jobs-per-timespan`) is below their number, for example with `jobs` set to the
   cluster's MaxSubmitJobs.
   Fix: ``run_jobs`` is told that no other job of the rule waits for it (``pending_jobs_for_rule`` returns 0), so
   it submits what it was handed at once: as one array, or as a single job when it is one.

Both fixes leave the plugin's own code in place and only change what it sees. tests/e2e/test_slurm_cluster.py runs
the installed plugin without them on the test cluster and checks that both faults are still there: when a release
fixes them, that test fails, and this module's fixes can go.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version

PLUGIN = "snakemake-executor-plugin-slurm"
# The plugin releases this workflow runs with (pyproject.toml pins the same range; a unit test checks it):
# 2.8.0 added `slurm-disable-memory-fudge`, the newest setting slurm/config.yaml uses; the fixes above are written
# against 2.8.0's code, and a new major release may change it.
SUPPORTED = ("2.8.0", "3")


def release(text: str) -> tuple[int, ...]:
    """'2.8.0' -> (2, 8, 0); a pre-release's or local suffix is ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def unsupported(installed: str) -> str | None:
    """The one line that stops a Slurm run when the installed plugin is outside SUPPORTED, else None."""
    low, high = SUPPORTED
    if release(low) <= release(installed) < release(high):
        return None
    return (f"{PLUGIN} {installed} is installed, but slurm/config.yaml and this workflow need >={low},<{high}: "
            f"pip install '{PLUGIN}>={low},<{high}'")


def submit_limit(user: str, inside_job: bool) -> tuple[int, str] | None:
    """How many jobs Slurm lets ``user`` queue or run at once (the smallest MaxSubmitJobs of the user's
    associations, minus one when Snakemake runs inside a Slurm job, which counts too), and where that limit comes
    from; None when no association sets one or sacctmgr cannot say."""
    try:
        out = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}",
                              "format=Account,MaxSubmit"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    limits = [(int(limit), account) for account, limit in (line.split("|")[:2] for line in out.splitlines()
                                                           if line.count("|") >= 1) if limit.isdigit()]
    if not limits:
        return None
    limit, account = min(limits)
    where = f"MaxSubmitJobs {limit} of user {user}, account {account}"
    if inside_job:
        return limit - 1, f"{where}, less 1 for the Slurm job that Snakemake itself runs in"
    return limit, where


def too_many_jobs(jobs: int, user: str, inside_job: bool) -> str | None:
    """The one line that stops a Slurm run whose `jobs` is above what Slurm lets the user queue, else None."""
    limit = submit_limit(user, inside_job)
    if limit is None or jobs <= limit[0]:
        return None
    return (f"jobs {jobs} (slurm/config.yaml, or --jobs) is more than Slurm lets you queue at once ({limit[1]}): "
            f"set jobs to {limit[0]} or less")


def fix_job_arrays() -> None:
    """Apply the two fixes above to the installed plugin, and make its executor check, when it starts, the
    plugin's release and the run's `jobs`. Nothing happens when the plugin is not installed (local runs only)."""
    try:
        installed = version(PLUGIN)
        import snakemake_executor_plugin_slurm as plugin
    except (PackageNotFoundError, ImportError):
        return
    executor = plugin.Executor
    if getattr(executor, "_prefinetune_fixed", False):  # the Snakefile may be read twice in one process
        return
    executor._prefinetune_fixed = True
    start = executor.__init__

    def checked_start(self, workflow, logger):
        # Before the plugin's own start, which removes the SLURM_* variables of a surrounding job.
        problem = unsupported(installed) or too_many_jobs(workflow.nodes, getpass.getuser(),
                                                          "SLURM_JOB_ID" in os.environ)
        if problem:
            raise SystemExit(problem)  # Snakemake exits 1 printing this line alone, and releases its lock
        start(self, workflow, logger)

    executor.__init__ = checked_start
    if unsupported(installed):
        return  # the executor stops at its start; the fixes are written for SUPPORTED only
    submit_arrays = executor.run_array_jobs

    def run_array_jobs(self, jobs):
        for first in range(0, len(jobs), self.max_array_size):
            submit_arrays(self, jobs[first:first + self.max_array_size])

    executor.run_array_jobs = run_array_jobs
    plugin.pending_jobs_for_rule = lambda dag, rule_name: 0
