"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from workflow_helpers import make_workdir, snakemake


@pytest.fixture(scope="session")
def demo_local(tmp_path_factory):
    """The embedded default, run once per session with the README's command in a fresh working directory.

    Shared by the end-to-end tests and the Slurm test (which compares its outputs with these). Tests may add
    outputs or rerun jobs in it, but must leave the main curve's outputs as they are.
    """
    workdir = make_workdir(tmp_path_factory.mktemp("demo"))
    # ~4 min on an idle 2-core machine; the generous limit only stops a hung run
    result = snakemake(workdir, "--cores", "2", "--report-after-run", "--report", "results/report.html",
                       timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir
