"""Fixtures shared by the test modules, and the markers of the three kinds of test.

tests/unit       the parts that carry the method, in this process: the quick loop, pytest -m "not slow"
tests/workflow   Snakemake's dry runs, config mistakes through the real CLI, runs of several processes (slow)
tests/e2e        the real workflow end to end on tiny data, also on a Slurm test cluster (slow)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data_helpers import generated_inputs
from workflow_helpers import make_workdir, snakemake

KINDS = {"unit": (), "workflow": ("workflow", "slow"), "e2e": ("e2e", "slow")}


def pytest_collection_modifyitems(items):
    for item in items:
        for mark in KINDS.get(Path(item.fspath).parent.name, ()):
            item.add_marker(mark)


@pytest.fixture
def isolated_hf(tmp_path, monkeypatch):
    """Keep datasets' cache inside the test's folder, and never touch the network."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """Three generated tasks tokenized for a tiny RoBERTa built on their text (data_helpers.GENERATED), once per
    session: (tasks, {name: tokenized folder}, model folder). Tests read them and write elsewhere."""
    return generated_inputs(tmp_path_factory.mktemp("generated"))


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
