"""Per-task transfer (prefinetune.transfer) on synthetic studies with a planted effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from prefinetune.analysis import transfer_map
from prefinetune.transfer import COLUMNS, FDR, bh_qvalues

POOL = [f"t{i}" for i in range(12)]


def study(draws=12, counts=(0, 3, 6, 9), seeds=2, effect=0.05, seed=1, draw_offset=0.0):
    """Nested subsets of 'tgt' (first in every order, as under targets_in_pool) plus the pool; on target 'tgt'
    the task t3 adds ``effect`` whenever it is in the subset; target 'other' has no planted effect. Draw 1's
    models are all ``draw_offset`` higher (its training seed, say)."""
    rng = np.random.default_rng(seed)
    orders = {d: ["tgt", *rng.permutation(POOL).tolist()] for d in range(1, draws + 1)}
    rows = []
    for target in ("tgt", "other"):
        rows += [(0, 0, target, s, 0.5 + 0.01 * rng.standard_normal()) for s in range(1, seeds + 1)]
        for d, order in orders.items():
            for k in counts[1:]:
                planted = effect if target == "tgt" and "t3" in order[:k] else 0.0
                planted += draw_offset * (d == 1)
                rows += [(k, d, target, s, 0.5 + 0.002 * k + planted + 0.01 * rng.standard_normal())
                         for s in range(1, seeds + 1)]
    df = pd.DataFrame(rows, columns=["k", "draw", "target", "seed", "value"]).assign(metric="accuracy")
    return df, orders


def test_a_planted_effect_is_recovered_within_its_interval():
    df, orders = study()
    table = transfer_map(df, orders, "main", n_boot=300, seed=0)
    assert list(table.columns) == COLUMNS and set(table["target"]) == {"tgt", "other", "mean"}
    cells = table.set_index(["target", "task"])
    planted = cells.loc[("tgt", "t3")]
    assert planted["identified"] and planted["effect_lo"] <= 0.05 <= planted["effect_hi"]
    assert planted["effect_lo"] > 0.03 and planted["starred"] and planted["q_value"] <= FDR  # clearly above zero
    tgt = cells.loc["tgt"].dropna(subset=["effect"])
    assert tgt["effect"].idxmax() == "t3"  # the largest effect on the target is the planted one
    assert abs(cells.loc[("other", "t3"), "effect"]) < 0.01  # nothing planted on the other target
    assert cells.loc[("mean", "t3"), "effect"] > 0


def test_a_task_in_every_subset_and_too_few_draws_are_flagged():
    df, orders = study()
    every = transfer_map(df, orders, "main", n_boot=50).set_index(["target", "task"]).loc[("tgt", "tgt")]
    assert not every["identified"] and every["reason"].startswith("in every subset")
    assert pd.isna(every["effect"]) and pd.isna(every["effect_lo"])  # no number for it
    few = transfer_map(*study(draws=2), "main", n_boot=50)
    pool = few[few["task"] != "tgt"]
    assert not pool["identified"].any()
    assert pool["reason"].str.contains("too few draws|no k at which|in no subset").all()
    assert pool["effect"].isna().all()


def test_transfer_table_is_deterministic_for_a_seed():
    df, orders = study(draws=6)
    first = transfer_map(df, orders, "main", n_boot=100, seed=7)
    pd.testing.assert_frame_equal(first, transfer_map(df, orders, "main", n_boot=100, seed=7))
    assert not first["effect_lo"].equals(transfer_map(df, orders, "main", n_boot=100, seed=8)["effect_lo"])


def test_a_task_that_always_enters_first_is_flagged():
    df, orders = study(draws=6)
    for order in orders.values():  # t0 is always the second task: in every subset of size >= 2
        order.remove("t0")
        order.insert(1, "t0")
    table = transfer_map(df, orders, "main", n_boot=20).set_index(["target", "task"])
    assert table.loc[("tgt", "t0"), "reason"].startswith("in every subset")


def test_q_values_are_benjamini_hochberg_by_hand():
    # sorted p 0.01, 0.03, 0.04, 0.2 of m = 4 tests: p * m / rank = 0.04, 0.06, 0.0533, 0.2, then the running
    # minimum from the largest down; NaN (no test) stays NaN and does not count in m
    q = bh_qvalues(np.array([0.01, 0.04, 0.03, np.nan, 0.2]))
    assert q[[0, 1, 2, 4]] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2]) and np.isnan(q[3])
    assert np.isnan(bh_qvalues(np.array([np.nan]))).all()


def test_a_draw_offset_is_not_read_as_a_task_effect():
    """Draw 1's models all 0.05 higher, no task effect on 'other': comparing draws at one k, the tasks early in
    draw 1's order would look helpful; with a level per draw nothing is starred and their estimates stay small."""
    df, orders = study(draw_offset=0.05)
    table = transfer_map(df, orders, "main", n_boot=200, seed=0)
    other = table[(table["target"] == "other") & table["identified"]].set_index("task")
    assert len(other) >= 8 and not other["starred"].any() and (other["q_value"] > FDR).all()
    early = [t for t in orders[1][1:5] if t in other.index]
    assert early and (other.loc[early, "effect"].abs() < 0.02).all()  # run noise 0.01; the offset is 0.05
    assert table.set_index(["target", "task"]).loc[("tgt", "t3"), "starred"]  # the planted one still is


def test_no_task_effect_stars_nothing():
    df, orders = study(effect=0.0, seed=4)
    table = transfer_map(df, orders, "main", n_boot=200, seed=0)
    identified = table[table["identified"]]
    assert len(identified) >= 20 and not identified["starred"].any()
    assert identified["p_value"].between(0, 1).all() and (identified["q_value"] >= identified["p_value"]).all()
