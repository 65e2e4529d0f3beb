"""Per-task transfer (prefinetune.transfer) on synthetic studies with a planted effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prefinetune.analysis import transfer_map
from prefinetune.transfer import COLUMNS

POOL = [f"t{i}" for i in range(12)]


def study(draws=12, counts=(0, 3, 6, 9), seeds=2, effect=0.05, seed=1):
    """Nested subsets of 'tgt' (first in every order, as under targets_in_pool) plus the pool; on target 'tgt'
    the task t3 adds ``effect`` whenever it is in the subset; target 'other' has no planted effect."""
    rng = np.random.default_rng(seed)
    orders = {d: ["tgt", *rng.permutation(POOL).tolist()] for d in range(1, draws + 1)}
    rows = []
    for target in ("tgt", "other"):
        rows += [(0, 0, target, s, 0.5 + 0.01 * rng.standard_normal()) for s in range(1, seeds + 1)]
        for d, order in orders.items():
            for k in counts[1:]:
                planted = effect if target == "tgt" and "t3" in order[:k] else 0.0
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
    assert planted["effect_lo"] > 0.03  # clearly above zero
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
