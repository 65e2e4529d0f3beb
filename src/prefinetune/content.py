"""Content transfer: what the pre-finetuning tasks' labels teach, apart from what training on their inputs does.

The null arm pre-finetunes each (k, draw) model of the main curve again on the same subset, with the same seed,
budget and heads, but with the labels' information destroyed (``families``: classes, values and answers
permuted, spans moved within their window, summaries swapped), and fine-tunes it exactly like the main curve.
Content transfer at k is main - null.

Pairing: the two arms share each (k, draw)'s subset and seed, so each draw gives one difference, the mean over
seeds of the main model's runs minus that of the null model's. Draws are independent (their own subsets and
seeds), so the interval is Student's t over the draws' differences, with draws - 1 degrees of freedom (its
quantiles computed from T_DRAWS seeded draws of the t distribution).

The critical point and break-even of the main curve, of the null curve and of their difference (main - null, run
by run: the same k, draw and seed; 0 at the shared k = 0) come from ``breakpoint.critical_points``, all three on
the null arm's task counts. The standardised mean over targets puts both arms on the main curve's scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import curve_series, target_scale
from .breakpoint import LEVEL, N_BOOT, critical_points
from .config import NULL

T_DRAWS = 200_000  # draws of the t distribution behind each interval's quantiles (Monte-Carlo error < 0.5 %)
KEYS = ["k", "draw", "seed"]
COLUMNS = ["target", "metric", "k", "n_draws", "main", "null", "content", "content_lo", "content_hi", "level", "n_failed"]
CURVES = {"main": "main", NULL: "null", "content": "main - null"}  # the curve -> the runs' column: main, null, both


def paired_runs(main: pd.DataFrame, null: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(target, metric, runs) for every target and the standardised mean (``analysis.curve_series``), the runs
    with columns k, draw, seed, main and null: the main curve's run and the null arm's of the same k, draw and
    seed, on the null arm's task counts (k = 0: the one baseline run in both); main_failed and null_failed: the
    failed-run rule's verdict on each (``failed_runs.py``; False where the table has no ``failed`` column)."""
    main = main[main["k"].isin(null["k"].unique())]
    scale = target_scale(main[~_failed(main)])
    nulls = {target: runs for target, _, runs in curve_series(null, scale)}
    out = []
    for target, metric, runs in curve_series(main, scale):
        a, b = (r[[*KEYS, "value"]].assign(failed=_failed(r)) for r in (runs, nulls[target]))
        pair = a.merge(b, on=KEYS, suffixes=("_main", "_null"))
        out.append((target, metric, pair.rename(columns={"value_main": "main", "value_null": "null",
                                                         "failed_main": "main_failed", "failed_null": "null_failed"})))
    return out


def _failed(runs: pd.DataFrame) -> np.ndarray:
    return runs["failed"].to_numpy(bool) if "failed" in runs else np.zeros(len(runs), bool)


def t_interval(values: np.ndarray, level: float, rng: np.random.Generator) -> tuple[float, float]:
    """Student's t interval of the mean of ``values`` (NaN with fewer than 2)."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    t = np.quantile(rng.standard_t(n - 1, T_DRAWS), 1 - tail)
    half = t * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def content_table(paired: list[tuple[str, str, pd.DataFrame]], level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    """Per target (and the standardised mean) and pre-finetuned k: the mean over draws of the main and the null
    models (each a mean over its seeds that did not fail), content = main - null, and its interval over the
    draws' differences; ``n_failed``: the failed runs left out (both arms; a draw of which one arm has no run left
    is left out)."""
    rows = []
    for i, (target, metric, runs) in enumerate(paired):
        rng = np.random.default_rng([seed, i])
        trained = runs[runs["k"] > 0]
        arms = trained[KEYS[:2]].assign(main=trained["main"].mask(trained["main_failed"]),
                                         null=trained["null"].mask(trained["null_failed"]))
        models = arms.groupby(KEYS[:2])[["main", "null"]].mean().dropna().reset_index()
        failed = (trained["main_failed"].astype(int) + trained["null_failed"].astype(int)).groupby(trained["k"]).sum()
        for k, cells in models.groupby("k"):
            diff = (cells["main"] - cells["null"]).to_numpy()
            lo, hi = t_interval(diff, level, rng)
            rows.append({"target": target, "metric": metric, "k": int(k), "n_draws": len(cells),
                         "main": cells["main"].mean(), "null": cells["null"].mean(), "content": diff.mean(),
                         "content_lo": lo, "content_hi": hi, "level": level, "n_failed": int(failed[k])})
    return pd.DataFrame(rows, columns=COLUMNS)


def critical_by_curve(paired: list[tuple[str, str, pd.DataFrame]], n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> pd.DataFrame:
    """``breakpoint.critical_points`` of the main curve, the null curve and their difference, in one table with a
    ``curve`` column (main, null_arm, content) before the critical-point table's own columns (``variant``: main,
    null_arm, main - null)."""
    parts = []
    for curve, column in CURVES.items():
        series = [(target, metric, runs[KEYS].assign(
            value=runs["main"] - runs["null"] if curve == "content" else runs[column],
            failed=runs["main_failed"] | runs["null_failed"] if curve == "content" else runs[f"{column}_failed"]))
                  for target, metric, runs in paired]
        table = critical_points(series, "main - null" if curve == "content" else curve, n_boot=n_boot, level=level,
                                seed=seed)
        parts.append(table.assign(curve=curve))
    table = pd.concat(parts, ignore_index=True)
    return table[["curve", *[c for c in table.columns if c != "curve"]]]
