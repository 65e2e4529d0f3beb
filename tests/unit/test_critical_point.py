"""The critical point (prefinetune.breakpoint) on synthetic curves with a known answer, and its CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from prefinetune.analysis import critical_table, main
from prefinetune.bootstrap import by_k, grid
from prefinetune.breakpoint import COLUMNS, analyse_curve, break_even, fit_hinge, hinge_fit

PAPER_COUNTS = (0, 10, 16, 22, 28, 34, 41)


def curve(k_c=16.0, before=-0.004, after=0.003, counts=PAPER_COUNTS, draws=6, seeds=3, noise=0.01, draw_sd=0.004,
          seed=0, target="a", metric="accuracy", drop=0.0):
    """Runs of one target: value = 0.7 + hinge(k) + a per-draw offset + per-run noise; k = 0 is draw 0. ``drop``
    lowers every k > 0 (a cost of any pre-finetuning)."""
    rng = np.random.default_rng(seed)
    hinge = lambda k: 0.7 + before * min(k, k_c) + after * max(k - k_c, 0) - drop * (k > 0)  # noqa: E731
    rows = [(0, 0, s, hinge(0) + noise * rng.standard_normal()) for s in range(1, seeds + 1)]
    for d in range(1, draws + 1):
        offset = draw_sd * rng.standard_normal()
        rows += [(k, d, s, hinge(k) + offset + noise * rng.standard_normal())
                 for k in counts if k > 0 for s in range(1, seeds + 1)]
    df = pd.DataFrame(rows, columns=["k", "draw", "seed", "value"])
    return df.assign(target=target, metric=metric)


def test_hinge_fit_recovers_an_exact_hinge():
    s = by_k(grid(curve(noise=0.0, draw_sd=0.0)))
    fit = hinge_fit(s)
    assert fit["k_c"] == pytest.approx(16.0, abs=1e-3)
    assert fit["slope_before"] == pytest.approx(-0.004, rel=1e-4)
    assert fit["slope_after"] == pytest.approx(0.003, rel=1e-4)
    assert fit["intercept"] == pytest.approx(0.7) and fit["rss"] == pytest.approx(0.0, abs=1e-12)
    # back at 0.7 where 0.7 - 0.004 * 16 + 0.003 * (k - 16) = 0.7
    assert break_even(fit, 41) == pytest.approx(16 + 0.064 / 0.003, rel=1e-4)
    assert break_even({**fit, "slope_before": 0.001}, 41) == 0.0  # never below the baseline
    assert math.isinf(break_even({**fit, "slope_after": -0.001}, 41))  # never back


def test_a_clear_breakpoint_is_identified_with_its_interval():
    row = analyse_curve(curve(), n_boot=200, level=0.9, rng=np.random.default_rng(0))
    assert row["status"] == "identified" and row["reason"] == "" and row["p_breakpoint"] < 0.01
    # 16 is the second trained k, and the replicates reach it: a break anywhere from 10 to 16 fits as well as one
    # at 16, so the interval starts at 10
    assert row["k_c"] == pytest.approx(16.0, abs=0.5) and row["k_c_lo"] == 10 and 16 <= row["k_c_hi"] < 20
    assert row["slope_before_lo"] < -0.004 < row["slope_before_hi"] < 0
    assert 0 < row["slope_after_lo"] < 0.003 < row["slope_after_hi"]
    assert row["k_c"] < row["break_even"] < 41
    assert row["n_runs"] == 3 + 6 * 6 * 3 and row["n_k"] == 7 and row["n_draws"] == 6


def test_a_break_between_two_task_counts_is_held_by_the_interval():
    """30 synthetic studies with a break at 13, between the trained k 10 and 16 (6 draws, 3 seeds, the paper's 7
    task counts), 200 replicates each. A hinge with k_c anywhere in (10, 16] fits exactly as well, so the fit
    reports 16 and the interval must reach down to 10: it should hold 13 in about 27 of 30 (at least 24; a
    binomial(30, 0.9) count is below 24 with probability 2.6 %), where an interval starting at 16 never would;
    and stay informative, its median upper end below 24. 300 such studies: 299 identified, the interval held 13 in
    96 % of them, median upper end 18.5."""
    hits, upper = 0, []
    for i in range(30):
        row = analyse_curve(curve(k_c=13.0, before=-0.004, after=0.003, seed=100 + i), n_boot=200, level=0.9,
                            rng=np.random.default_rng(i))
        assert row["status"] == "identified", row["reason"]
        hits += row["k_c_lo"] <= 13.0 <= row["k_c_hi"]
        upper.append(row["k_c_hi"])
    assert hits >= 24, hits
    assert np.median(upper) < 24, np.median(upper)


@pytest.mark.parametrize("name, df", [
    ("straight line", curve(before=0.002, after=0.002)),
    ("pure noise", curve(before=0.0, after=0.0)),
])
def test_a_straight_line_and_pure_noise_are_not_identified(name, df):
    row = analyse_curve(df, n_boot=200, level=0.9, rng=np.random.default_rng(1))
    assert row["status"] == "not identified", name
    assert "no evidence for a breakpoint" in row["reason"] and row["p_breakpoint"] >= 0.05
    for quantity in ("k_c", "k_c_lo", "k_c_hi", "slope_before", "slope_after", "break_even"):
        assert quantity not in row or math.isnan(row[quantity])  # no spurious number
    assert row["slope_line_lo"] <= (0.002 if name == "straight line" else 0.0) <= row["slope_line_hi"]


def test_too_few_task_counts_or_draws_are_not_identified():
    row = analyse_curve(curve(counts=(0, 10, 41)), n_boot=50, level=0.9, rng=np.random.default_rng(0))
    assert row["status"] == "not identified" and row["reason"].startswith("too few distinct k (3;")
    assert "k_c" not in row and not math.isnan(row["slope_line"])
    row = analyse_curve(curve(draws=2), n_boot=50, level=0.9, rng=np.random.default_rng(0))  # a clear hinge
    assert row["status"] == "not identified" and row["reason"].startswith("too few draws (2;")
    assert "k_c" not in row and "p_breakpoint" not in row and not math.isnan(row["slope_line"])


def test_table_has_every_target_and_the_standardised_mean_and_is_deterministic():
    df = pd.concat([curve(target="a"), curve(target="b", metric="f1", before=0.001, after=0.001, seed=5)])
    df["value"] = np.where(df["target"] == "b", df["value"] * 50, df["value"])  # another scale: standardised away
    first = critical_table(df, "main", n_boot=100, seed=3)
    assert list(first.columns) == COLUMNS
    assert first["target"].tolist() == ["a", "b", "mean"]
    assert first["metric"].tolist() == ["accuracy", "f1", "standardised"]
    assert first.set_index("target").loc["a", "status"] == "identified"
    assert first.set_index("target").loc["b", "status"] == "not identified"
    pd.testing.assert_frame_equal(first, critical_table(df, "main", n_boot=100, seed=3))
    assert not first.equals(critical_table(df, "main", n_boot=100, seed=4))


def test_cli_prints_the_table_of_a_minimal_csv(tmp_path, capsys):
    path = tmp_path / "scaling.csv"
    curve().drop(columns="metric").to_csv(path, index=False)  # only k, draw, seed, value, target
    assert main([str(path), "--bootstrap", "100", "--output", str(tmp_path / "out.csv")]) == 0
    printed = capsys.readouterr().out
    assert "identified" in printed and "k_c" in printed and "mean" in printed
    assert pd.read_csv(tmp_path / "out.csv")["status"].tolist() == ["identified", "identified"]


def test_cli_names_the_missing_column_and_the_bad_row(tmp_path):
    path = tmp_path / "scaling.csv"
    curve().drop(columns="draw").to_csv(path, index=False)
    result = subprocess.run([sys.executable, "-m", "prefinetune.analysis", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and f"{path}: missing column(s) ['draw']" in result.stderr
    df = curve().astype({"value": object})
    df.loc[4, "value"] = "oops"
    df.to_csv(path, index=False)
    result = subprocess.run([sys.executable, "-m", "prefinetune.analysis", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and "row 6: column 'value' is not a number: 'oops'" in result.stderr


# -- k = 0 as its own level, the parametric intervals at the config's design --------------------------------------
OLD_COLUMNS = ["variant", "target", "metric", "status", "reason", "n_runs", "n_k", "n_draws", "p_breakpoint",
               "k_c", "k_c_lo", "k_c_hi", "slope_before", "slope_before_lo", "slope_before_hi", "slope_after",
               "slope_after_lo", "slope_after_hi", "break_even", "break_even_lo", "break_even_hi", "slope_line",
               "slope_line_lo", "slope_line_hi", "intercept", "note", "level", "n_boot"]


def test_new_columns_come_after_the_old_ones():
    assert COLUMNS[:len(OLD_COLUMNS)] == OLD_COLUMNS
    assert COLUMNS[len(OLD_COLUMNS):] == ["baseline", "dip", "dip_lo", "dip_hi", "k_first", "trend", "interval",
                                          "n_failed"]


def test_the_exact_hinge_fit_matches_a_fine_grid_search():
    rng = np.random.default_rng(3)
    x = np.array([10.0, 16, 22, 28, 34, 41])
    y = 0.7 - 0.003 * np.minimum(x, 25) + 0.002 * np.maximum(x - 25, 0) + 0.004 * rng.standard_normal((20, 6))
    fit = fit_hinge(x, y, np.full(6, 9.0))
    candidates = np.linspace(16, 34, 18001)  # every 0.001 task
    X = np.stack([np.ones((len(candidates), 6)), np.broadcast_to(x, (len(candidates), 6)),
                  np.maximum(x - candidates[:, None], 0)], -1)
    beta = np.linalg.solve(np.swapaxes(X, 1, 2) @ X, np.swapaxes(X, 1, 2) @ y.T)  # (grid, 3, replicates)
    rss = 9.0 * ((y.T[None] - X @ beta) ** 2).sum(1)  # (grid, replicates)
    assert (fit["rss"] <= rss.min(0) + 1e-12).all()
    np.testing.assert_allclose(fit["k_c"], candidates[rss.argmin(0)], atol=0.01)


def test_k0_is_its_own_level_a_drop_then_a_rise_has_no_breakpoint_but_a_break_even():
    """A cost at any pre-finetuning (0.04), then a straight rise (0.002 per task): back at the baseline at k = 20.
    Fitted through k = 0, this would look like a breakpoint at the first trained k."""
    df = curve(before=0.002, after=0.002, drop=0.04)
    row = analyse_curve(df, n_boot=200, level=0.9, rng=np.random.default_rng(0))
    assert row["status"] == "not identified" and "no evidence for a breakpoint" in row["reason"]
    assert math.isnan(row.get("k_c", math.nan)) and row["trend"] == "line" and row["k_first"] == 10
    assert row["baseline"] == pytest.approx(0.7, abs=0.015)
    assert row["dip_hi"] < 0 and row["dip"] == pytest.approx(-0.02, abs=0.01)  # at k = 10: -0.04 + 0.02
    assert row["break_even_lo"] <= 20 <= row["break_even_hi"] and abs(row["break_even"] - 20) < 4
    assert row["slope_line_lo"] <= 0.002 <= row["slope_line_hi"]


def test_intervals_hold_at_three_draws_where_the_resampling_bootstrap_does_not():
    """100 studies at 3 draws, 3 seeds and the paper's 7 task counts (draw SD 0.006, run SD 0.01) of a
    hinge dipping to k = 22 and back at the baseline at k = 33; 100 replicates each. The 90 % intervals of k_c and
    break-even should hold the truth in about 90 (bench/coverage.py at the config's design, 500 replicates: 97 to
    98 % and 96 %). Bound: 85 of 100. Percentile intervals of the two-stage resampling (draws, then seeds) hold
    the break-even in 77: too few, 3 draws resample into 10 distinct sets."""
    hits = {"parametric": [0, 0, 0], "resample": [0, 0, 0]}
    for method, counts in hits.items():
        for i in range(100):
            df = curve(k_c=22.0, before=-0.002, after=0.004, draws=3, draw_sd=0.006, seed=1000 + i)
            row = analyse_curve(df, n_boot=100, level=0.9, rng=np.random.default_rng(i), method=method)
            if row["status"] == "identified":
                counts[0] += 1
                counts[1] += row["k_c_lo"] <= 22 <= row["k_c_hi"]
                lo, hi = row.get("break_even_lo", np.nan), row.get("break_even_hi", np.nan)
                counts[2] += lo <= 33 <= np.nan_to_num(hi, nan=np.inf)  # not reported: not held
    identified, k_c, break_even = hits["parametric"]
    assert identified >= 95 and k_c >= 85 and break_even >= 85, hits
    assert hits["resample"][2] < 85, hits


def test_rows_are_deterministic_for_a_seed_at_three_draws():
    df = curve(k_c=22.0, before=-0.002, after=0.004, draws=3, draw_sd=0.006, seed=7)
    first = analyse_curve(df, n_boot=100, level=0.9, rng=np.random.default_rng(5))
    assert first["interval"] == "parametric" and first["status"] == "identified"
    assert first == analyse_curve(df, n_boot=100, level=0.9, rng=np.random.default_rng(5))
    assert first != analyse_curve(df, n_boot=100, level=0.9, rng=np.random.default_rng(6))
