"""Failed fine-tuning runs (prefinetune.failed_runs): the rule, scaling.csv's column, the fits that leave them out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prefinetune.analysis import collect, critical_table, read_scaling, standardised_mean, transfer_map, write_table
from prefinetune.breakpoint import analyse_curve
from prefinetune.failed_runs import failed
from test_critical_point import curve
from test_transfer import study


def test_the_rule_marks_a_run_whose_loss_did_not_fall_and_that_scores_at_chance():
    runs = pd.DataFrame({
        "value":       [0.53, 0.53, 0.58, 0.59, 0.75, 0.53, 0.53, np.nan, 0.53, 0.53],
        "chance":      [0.53, 0.53, 0.53, 0.53, 0.53, 0.53, np.nan, 0.53, 0.53, 0.53],
        "loss_start":  [0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 1.00, 1.00],
        "loss_end":    [0.69, 0.70, 0.65, 0.69, 0.69, 0.30, 0.69, 0.69, 0.69, 0.50],
        "loss_chance": [0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, np.nan],
    })
    # flat loss at chance; rising loss at chance; within 0.05 of chance; 0.06 above; well above chance (a carried
    # head that starts low); at chance after learning (a real dip: kept); no chance recorded; no value; a new head
    # that started above the chance loss and only learnt the label frequencies (marked); a fall without a chance
    # loss (span, summarization: measured against the start only)
    assert failed(runs).tolist() == [True, True, True, False, False, False, False, False, True, False]
    assert not failed(runs.drop(columns="loss_end")).any()  # runs written before the fields existed
    assert failed(runs.drop(columns="loss_chance")).tolist()[:8] == [True, True, True, False, False, False, False,
                                                                     False]


def test_failed_runs_are_left_out_of_the_fit_and_counted():
    """The config's design, a break at 22, 4 of its 57 runs failed at chance (0.53), one at k = 0: the row is the row
    of the other runs, with the failed ones counted. Averaged in, the failed k = 0 run alone moves the baseline down
    by 0.06, and the dip below it (truth: 0.044 at k = 22, back at k = 33) is lost."""
    df = curve(k_c=22.0, before=-0.002, after=0.004, draws=3, draw_sd=0.006, seed=7)
    df["failed"] = df.index.isin([1, 10, 25, 40])
    df.loc[df["failed"], "value"] = 0.53
    n_failed = 4
    row = analyse_curve(df, n_boot=200, level=0.9, rng=np.random.default_rng(5))
    kept = analyse_curve(df[~df["failed"]].drop(columns="failed"), n_boot=200, level=0.9, rng=np.random.default_rng(5))
    assert row == {**kept, "n_failed": n_failed} and row["n_runs"] == len(df) - n_failed
    assert row["status"] == "identified" and row["k_c_lo"] <= 22 <= row["k_c_hi"]
    assert row["break_even_lo"] <= 33 <= row["break_even_hi"]
    averaged = analyse_curve(df.assign(failed=False), n_boot=200, level=0.9, rng=np.random.default_rng(5))
    assert averaged["n_failed"] == 0 and averaged["baseline"] < row["baseline"] - 0.04
    assert "break_even" not in averaged and averaged["dip_hi"] > 0


def test_scaling_csv_marks_failed_runs_and_the_analysis_counts_them(tmp_path):
    """metrics.json records with the rule's fields -> scaling.csv's ``failed`` -> critical_point.csv's n_failed;
    the standardised mean averages the targets whose run did not fail; the transfer map leaves them out."""
    df, orders = study(draws=6)
    df = df.assign(chance=0.5, loss_start=0.69, loss_end=0.2, loss_chance=0.69)
    bad = df.index[(df["target"] == "tgt") & (df["seed"] == 1)][::5]  # 1 in 5 of tgt's seed-1 runs, k = 0 included
    df.loc[bad, ["value", "loss_end"]] = [0.5, 0.69]
    paths = []
    for i, r in enumerate(df.to_dict("records")):
        path = tmp_path / f"run{i}" / "metrics.json"
        path.parent.mkdir()
        record = {**{k: r[k] for k in ("k", "draw", "target", "seed", "metric", "value", "chance", "loss_start",
                                       "loss_end", "loss_chance")}, "variant": "main",
                  "metrics": {"accuracy": r["value"]}}
        path.write_text(json.dumps(record))
        paths.append(str(path))
    write_table(collect(paths, "main"), tmp_path / "scaling.csv")
    table = read_scaling(tmp_path / "scaling.csv")
    assert table["failed"].dtype == bool and table["failed"].sum() == len(bad)
    assert set(table.loc[table["failed"], "target"]) == {"tgt"}

    critical = critical_table(table, "main", n_boot=50).set_index("target")
    assert critical.loc["tgt", "n_failed"] == len(bad) and critical.loc["other", "n_failed"] == 0
    assert critical.loc["tgt", "n_runs"] == (table["target"] == "tgt").sum() - len(bad)
    mean = standardised_mean(table)
    assert len(mean) == len(table) // 2 and not mean["failed"].any()  # every (k, draw, seed) has a target left
    one = mean.set_index(["k", "draw", "seed"])["value"]
    alone = standardised_mean(table[table["target"] == "other"]).set_index(["k", "draw", "seed"])["value"]
    key = tuple(df.loc[bad[1], ["k", "draw", "seed"]])
    assert one[key] == pytest.approx(alone[key])  # where tgt failed, the mean is other's value alone

    transfer = transfer_map(table, orders, "main", n_boot=50, seed=0)
    kept = transfer_map(table[~table["failed"]], orders, "main", n_boot=50, seed=0)
    tgt = lambda t: t[t["target"] == "tgt"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(tgt(transfer), tgt(kept).assign(q_value=tgt(transfer)["q_value"],
                                                                   starred=tgt(transfer)["starred"]))
    assert critical.loc["mean", "n_failed"] == 0
