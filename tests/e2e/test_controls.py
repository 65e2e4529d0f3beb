"""The positive and negative controls (demo/controls/), run for real through Snakemake: generated experiments whose
answer is known from their design, so that the whole chain (pre-finetuning carries what it learned into
fine-tuning, aggregation and analysis report it) is checked against a known effect, and against a known absence.

Positive: the pool's tasks each read one of the hidden dimensions the held-out target needs; the target's accuracy
rises with k, the single line's 90 % slope interval lies above 0, and at the largest k the content transfer (main -
null arm: the same models pre-finetuned on shuffled labels) has an interval above 0. Negative: the pool reads
dimensions the target never uses; its content transfer's interval contains 0, and the positive's content transfer
is above the negative's, the interval of their difference above 0.
"""

from __future__ import annotations

import math

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


def content_at_largest_k(workdir):
    """The target's content transfer (main - null) at the largest k, from results/null/content_transfer.csv."""
    (target,) = load_config(workdir / "config.yaml")["targets"]
    table = pd.read_csv(workdir / "results" / "null" / "content_transfer.csv")
    row = table[table.target == target].sort_values("k").iloc[-1]
    assert row.n_draws >= 3 and row.k == max(load_config(workdir / "config.yaml")["task_counts"])
    return row


def test_positive_control_the_labels_teach_the_target(positive):
    row = content_at_largest_k(positive)
    assert row.content_lo > 0, row.to_dict()


def test_negative_control_the_labels_teach_the_target_nothing(negative):
    row = content_at_largest_k(negative)
    assert row.content_lo <= 0 <= row.content_hi, row.to_dict()


def test_the_positive_pool_teaches_more_than_the_negative_pool(positive, negative):
    """The positive's content transfer at the largest k minus the negative's: the two controls are independent
    experiments, so the interval of the difference adds their Student t half-widths in quadrature (conservative:
    each half-width has its own draws - 1 degrees of freedom, fewer than the difference's)."""
    p, n = content_at_largest_k(positive), content_at_largest_k(negative)
    difference = p.content - n.content
    half = math.hypot(p.content_hi - p.content, n.content_hi - n.content)
    assert difference - half > 0, (p.to_dict(), n.to_dict())
