"""The critical point: a continuous two-segment ("hinge") least-squares fit of a target's value against k.

Model: value = a + b1 * k + (b2 - b1) * max(k - k_c, 0). For a fixed k_c the fit is linear least squares;
k_c itself is found by SciPy's bounded scalar minimiser (``scipy.optimize.minimize_scalar``) on the residual
sum of squares, started in the bracket of the best point of a coarse grid. Every run (draws x seeds, k = 0
included) enters the fit; runs at one k share their regressors, so the fit uses each k's mean and run count.

Uncertainty: the two-stage bootstrap of ``bootstrap.py`` (draws, then seeds within them), percentile
intervals. Existence of a breakpoint: a bootstrap test of the hinge against a single line (statistic
(RSS_line - RSS_hinge) / RSS_hinge), with data simulated under the fitted line plus resampled within-k
deviations.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from .bootstrap import ByK, by_k, grid, interval, resample, with_values

N_BOOT = 500       # bootstrap replicates for intervals and for the test
LEVEL = 0.9        # confidence level of the intervals
ALPHA = 0.05       # the test's level: p >= ALPHA means no evidence for a breakpoint
MIN_COUNTS = 4     # distinct k a breakpoint needs: k_c lies between the second and the second-last k
MIN_DRAWS = 3      # draws the bootstrap needs: 2 draws resample into only 3 distinct sets
SPAN = 0.9         # an interval covering this share of the possible k_c says nothing about where it is

QUANTITIES = ["k_c", "slope_before", "slope_after", "break_even", "slope_line"]
COLUMNS = ["variant", "target", "metric", "status", "reason", "n_runs", "n_k", "n_draws", "p_breakpoint",
           *[f"{q}{s}" for q in QUANTITIES for s in ("", "_lo", "_hi")], "intercept", "note", "level", "n_boot"]


def _wls(X: np.ndarray, s: ByK) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of the per-k means (weights: runs per k), batched over leading axes of X.
    Returns the coefficients and the total RSS over all runs."""
    Xw = X * s.n[:, None]
    beta = np.linalg.solve(np.swapaxes(Xw, -1, -2) @ X, (np.swapaxes(Xw, -1, -2) @ s.mean)[..., None])[..., 0]
    resid = s.mean - (X @ beta[..., None])[..., 0]
    return beta, (s.n * resid ** 2).sum(-1) + s.ss


def _hinge_design(x: np.ndarray, kc) -> np.ndarray:
    kc = np.asarray(kc, float)[..., None]
    ones = np.broadcast_to(np.ones_like(x), kc.shape[:-1] + x.shape)
    return np.stack([ones, np.broadcast_to(x, ones.shape), np.maximum(x - kc, 0.0)], axis=-1)


def _hinge_rss(kc: float, s: ByK) -> float:
    """RSS of the hinge at one k_c (the scalar function SciPy minimises; written flat, it runs per replicate)."""
    X = np.empty((len(s.x), 3))
    X[:, 0], X[:, 1], X[:, 2] = 1.0, s.x, np.maximum(s.x - kc, 0.0)
    Xw = X.T * s.n
    resid = s.mean - X @ np.linalg.solve(Xw @ X, Xw @ s.mean)
    return float(s.n @ resid ** 2 + s.ss)


def line_fit(s: ByK) -> tuple[float, float, float]:
    """Intercept, slope and RSS of a single line."""
    beta, rss = _wls(np.stack([np.ones_like(s.x), s.x], axis=-1), s)
    return float(beta[0]), float(beta[1]), float(rss)


def admissible(s: ByK) -> tuple[float, float]:
    """The possible k_c: between the second and the second-last distinct k, so each segment has two."""
    return float(s.x[1]), float(s.x[-2])


def hinge_fit(s: ByK) -> dict:
    """The least-squares hinge: k_c, intercept a, slopes b1 (before) and b2 (after), and the RSS."""
    lo, hi = admissible(s)
    kc = lo
    if hi > lo:
        # coarse grid, then SciPy's bounded minimiser in the bracket around the best grid point
        candidates = np.linspace(lo, hi, 8 * (len(s.x) - 3) + 1)
        rss = _wls(_hinge_design(s.x, candidates), s)[1]
        best = int(np.argmin(rss))
        bracket = candidates[max(best - 1, 0)], candidates[min(best + 1, len(candidates) - 1)]
        found = minimize_scalar(_hinge_rss, bounds=bracket, args=(s,), method="bounded",
                                options={"xatol": 1e-3})  # in tasks
        kc = float(found.x) if found.fun < rss[best] else float(candidates[best])
    beta, rss = _wls(_hinge_design(s.x, kc), s)
    a, b1, c = (float(v) for v in beta)
    return {"k_c": kc, "intercept": a, "slope_before": b1, "slope_after": b1 + c, "rss": float(rss)}


def break_even(fit: dict, k_max: float) -> float:
    """Where the fitted curve comes back to its own value at k = 0: 0 if it never falls below it, infinite
    if it does not come back by ``k_max``."""
    b1, b2 = fit["slope_before"], fit["slope_after"]
    if b1 >= 0:
        return 0.0
    if b2 <= 0:
        return math.inf
    k = fit["k_c"] * (1 - b1 / b2)
    return k if k <= k_max else math.inf


def _statistic(s: ByK) -> float:
    rss_line, rss_hinge = line_fit(s)[2], hinge_fit(s)["rss"]
    return (rss_line - rss_hinge) / rss_hinge if rss_hinge > 0 else math.inf


def _null_grid(g, s: ByK, line: tuple[float, float, float]):
    """Data under the null: the fitted line plus each run's deviation from its k's mean."""
    a, b = line[:2]
    mean_at = dict(zip(s.x, s.mean))
    trained = np.array([mean_at[k] for k in g.counts.astype(float)])
    values = a + b * g.counts[:, None, None] + (g.values - trained[:, None, None])
    baseline = a + (g.baseline - g.baseline.mean()) if len(g.baseline) else g.baseline
    return with_values(g, values, baseline)


def _number(v: float) -> float:
    return v if math.isfinite(v) else float("nan")  # an infinite bound is written as empty


def analyse_curve(runs: pd.DataFrame, n_boot: int, level: float, rng: np.random.Generator) -> dict:
    """One row of the critical-point table for ``runs`` (columns k, draw, seed, value) of one target."""
    g = grid(runs)
    s = by_k(g)
    row = {"n_runs": len(runs), "n_k": len(s.x), "n_draws": len(g.draws), "level": level, "n_boot": n_boot}
    reasons = []
    if len(s.x) < MIN_COUNTS:
        reasons.append(f"too few distinct k ({len(s.x)}; a breakpoint needs at least {MIN_COUNTS})")
    if len(g.draws) < MIN_DRAWS:
        reasons.append(f"too few draws ({len(g.draws)}; the bootstrap needs at least {MIN_DRAWS})")
    if len(s.x) < 2:
        return {**row, "status": "not identified", "reason": "; ".join(reasons)}

    # the single line (always defined) and, with enough k and draws, the hinge
    line = line_fit(s)
    row["slope_line"] = line[1]
    if len(g.draws) < MIN_DRAWS:
        return {**row, "status": "not identified", "reason": "; ".join(reasons)}
    k_max = float(s.x[-1])
    fit = hinge_fit(s) if not reasons else None
    observed = _statistic(s) if fit else None
    null = _null_grid(g, s, line) if fit else None

    # bootstrap: the quantities on resampled data, and the test statistic on resampled null data
    boot = {q: np.empty(n_boot) for q in QUANTITIES}
    exceed = 0
    for i in range(n_boot):
        sr = by_k(resample(g, rng)[0])
        boot["slope_line"][i] = line_fit(sr)[1]
        if fit:
            f = hinge_fit(sr)
            for q in ("k_c", "slope_before", "slope_after"):
                boot[q][i] = f[q]
            boot["break_even"][i] = break_even(f, k_max)
            exceed += _statistic(by_k(resample(null, rng)[0])) >= observed
    row["slope_line_lo"], row["slope_line_hi"] = interval(boot["slope_line"], level)
    if not fit:
        return {**row, "status": "not identified", "reason": "; ".join(reasons)}

    # identified only with evidence for a breakpoint and an interval that says where it is
    p = (1 + exceed) / (1 + n_boot)
    row["p_breakpoint"] = p
    kc_lo, kc_hi = interval(boot["k_c"], level)
    lo, hi = admissible(s)
    if p >= ALPHA:
        reasons.append(f"no evidence for a breakpoint (bootstrap test p = {p:.3f} >= {ALPHA})")
    if hi == lo or kc_hi - kc_lo >= SPAN * (hi - lo):
        reasons.append(f"the {level:.0%} interval of k_c ({kc_lo:.3g} to {kc_hi:.3g}) spans the whole range of "
                       f"possible breakpoints ({lo:.3g} to {hi:.3g})")
    if reasons:
        return {**row, "status": "not identified", "reason": "; ".join(reasons)}

    row.update(status="identified", reason="", intercept=fit["intercept"])
    fit["break_even"] = break_even(fit, k_max)
    for q in ("k_c", "slope_before", "slope_after", "break_even"):
        q_lo, q_hi = interval(boot[q], level)
        row[q], row[f"{q}_lo"], row[f"{q}_hi"] = _number(fit[q]), _number(q_lo), _number(q_hi)
    notes = []
    if fit["break_even"] == 0:
        notes.append("break_even 0: the fitted curve never falls below its value at k = 0")
    if math.isinf(fit["break_even"]) or math.isinf(boot["break_even"].max()):
        notes.append(f"an empty break_even or bound: the fitted curve is not back at its k = 0 value by "
                     f"k = {k_max:g}")
    row["note"] = "; ".join(notes)
    return row


def critical_points(series: list[tuple[str, str, pd.DataFrame]], variant: str, n_boot: int = N_BOOT,
                    level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    """The critical-point table: one row per (target, metric, runs) of ``series``; deterministic for ``seed``."""
    rows = []
    for i, (target, metric, runs) in enumerate(series):
        rng = np.random.default_rng([seed, i])
        rows.append({"variant": variant, "target": target, "metric": metric,
                     **analyse_curve(runs, n_boot, level, rng)})
    return pd.DataFrame(rows).reindex(columns=COLUMNS)
