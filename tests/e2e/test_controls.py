"""The positive and negative controls (demo/controls/), run for real through Snakemake: generated experiments whose
answer is known from their design, so that the whole chain (pre-finetuning carries what it learned into
fine-tuning, aggregation and analysis report it) is checked against a known effect, and against a known absence.

Positive: the pool's tasks each read one of the hidden dimensions the held-out target needs; the target's accuracy
rises with k, and the single line's 90 % slope interval lies above 0. Negative: the pool reads dimensions the
target never uses; the interval contains 0.
"""

from __future__ import annotations

import pandas as pd
import pytest

from workflow_helpers import REPO, load_config, make_workdir, snakemake

pytestmark = pytest.mark.slow
CONTROLS = REPO / "demo" / "controls"


def run_control(tmp_path_factory, name):
    workdir = make_workdir(tmp_path_factory.mktemp(f"control_{name}"), source=CONTROLS / name / "config.yaml")
    # a few minutes each on the 2-core machine (docs/demo.md); the limit only stops a hung run
    result = snakemake(workdir, "--cores", "2", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def positive(tmp_path_factory):
    return run_control(tmp_path_factory, "positive")


@pytest.fixture(scope="module")
def negative(tmp_path_factory):
    return run_control(tmp_path_factory, "negative")


def target_row(workdir):
    config = load_config(workdir / "config.yaml")
    (target,) = config["targets"]
    critical = pd.read_csv(workdir / "results" / "critical_point.csv").set_index("target")
    table = pd.read_csv(workdir / "results" / "scaling.csv")
    assert sorted(table.k.unique()) == sorted(config["task_counts"])
    assert critical.loc[target, "n_draws"] == config["draws"] >= 3  # enough draws for the bootstrap
    assert (workdir / "results" / "scaling_curve.png").read_bytes().startswith(b"\x89PNG")
    return critical.loc[target], table.groupby("k").value.mean()


def test_positive_control_the_target_gains_with_the_tasks_that_teach_what_it_needs(positive):
    row, means = target_row(positive)
    assert row.slope_line_lo > 0, row.to_dict()
    assert means.iloc[-1] > means.iloc[0] + 0.03, means.to_dict()  # largest k against k = 0


def test_negative_control_no_trend_when_the_pool_teaches_nothing_the_target_needs(negative):
    row, means = target_row(negative)
    assert row.slope_line_lo <= 0 <= row.slope_line_hi, row.to_dict()
    assert means.iloc[-1] < means.iloc[0] + 0.03, means.to_dict()  # no gain at the largest k over k = 0
