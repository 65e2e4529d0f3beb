"""The critical point and the break-even k of a target's scaling curve.

Model. The model without pre-finetuning (k = 0, shared by all draws; only its seeds vary) is its own level, the
baseline: the mean of its runs. The trend in k is fitted on the pre-finetuned models (k > 0) only, on each k's
mean over draws and seeds (weights: runs per k), as a single line or as a continuous two-segment ("hinge")
line, value = a + b1 * k + (b2 - b1) * max(k - k_c, 0). Nothing is assumed between k = 0 and the first trained
k. k_c lies between the second and the second-last trained k, so that each segment holds two task counts; a
break between the first two trained k fits equally well anywhere in that gap and is reported at the second (and
likewise at the top). The hinge fit is exact: with k_c between two adjacent task counts it is linear least
squares in (a, b1, b2 - b1, (b1 - b2) * k_c) (Hudson 1966), otherwise k_c sits on a task count; every candidate
is solved at once, batched over replicates.

break_even: the k from which on the fitted trend stays at or above the baseline; 0 when it is never below it,
infinite when it is not back by the largest k. It comes from the hinge where a breakpoint is identified and
from the single line otherwise, and is reported only where the trend's lowest point is below the baseline
(``dip``: the trend minus the baseline there; the upper end of its interval below 0): without a dip there is
nothing to regain.

Uncertainty: a parametric bootstrap from a variance model of the design. A (k, draw) model's mean over its
seeds is the fitted trend plus a draw offset (shared by the draw's models at every k) plus cell noise; the k = 0
model's mean over its seeds is the baseline plus cell noise too (it is one model, like a cell). The variances are
estimated from the data: the cell noise from the (k, draw) means about the trend and the draw means, and at
least the seeds' variance within the cells (k = 0 included); the draw offsets from the spread of the draws' mean
residuals (draws - 1 degrees of freedom). Each replicate first draws each variance from its scaled inverse
chi-square distribution (estimate x df / chi2(df)), then data from the model with those variances, and refits.
So the intervals carry the uncertainty of the variances too: for a quantity linear in the data this gives the t
interval, with draws - 1 degrees of freedom for the draw part. Intervals: the replicates' percentiles.
``method="resample"`` uses the two-stage resampling of ``bootstrap.py`` instead (draws, then seeds within them);
at 3 draws its intervals are too narrow (docs/results.md).

Existence of a breakpoint: the statistic (RSS_line - RSS_hinge) / RSS_hinge, with RSS of the k means about
the trend plus the (k, draw) means' interaction about the k and draw means; its null distribution comes from the
same parametric model around the fitted line (the statistic hardly depends on the variances).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import ByK, Grid, grid, interval, resample

N_BOOT = 500       # bootstrap replicates for intervals and for the test
LEVEL = 0.9        # confidence level of the intervals
ALPHA = 0.05       # the test's level: p >= ALPHA means no evidence for a breakpoint
MIN_COUNTS = 4     # trained k (k > 0) a breakpoint needs: k_c lies between the second and the second-last
MIN_DRAWS = 3      # draws the bootstrap needs: the draw offsets' variance needs 2 degrees of freedom
SPAN = 0.9         # an interval covering this share of the possible k_c says nothing about where it is
METHODS = ("parametric", "resample")

QUANTITIES = ["k_c", "slope_before", "slope_after", "break_even", "slope_line"]
COLUMNS = ["variant", "target", "metric", "status", "reason", "n_runs", "n_k", "n_draws", "p_breakpoint",
           *[f"{q}{s}" for q in QUANTITIES for s in ("", "_lo", "_hi")], "intercept", "note", "level", "n_boot",
           "baseline", "dip", "dip_lo", "dip_hi", "k_first", "trend", "interval", "n_failed"]


# -- least squares on the k means, batched over leading axes ---------------------------------------------------------
def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of y (..., K) on X (..., K, p) with weights w (..., K): coefficients and RSS."""
    Xw = X * w[..., None]
    A = np.swapaxes(Xw, -1, -2) @ X
    b = (np.swapaxes(Xw, -1, -2) @ y[..., None])[..., 0]
    beta = np.linalg.solve(A, b[..., None])[..., 0]
    resid = y - (X @ beta[..., None])[..., 0]
    return beta, (w * resid ** 2).sum(-1)


def fit_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict:
    """The weighted least-squares line through (x, y): intercept, slope and RSS, batched over y's leading axes."""
    sw = w.sum(-1)
    xm, ym = (w * x).sum(-1) / sw, (w * y).sum(-1) / sw
    dx = x - xm[..., None]
    slope = (w * dx * (y - ym[..., None])).sum(-1) / (w * dx ** 2).sum(-1)
    a = ym - slope * xm
    rss = (w * (y - a[..., None] - slope[..., None] * x) ** 2).sum(-1)
    return {"intercept": a, "slope": slope, "rss": rss}


def fit_hinge(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict:
    """The exact least-squares hinge through (x, y) with k_c in [x[1], x[-2]]: k_c, intercept, slope_before,
    slope_after and RSS, batched over y's leading axes. Ties go to the smallest k_c."""
    K = len(x)
    knots = x[1:K - 1]
    # k_c on a task count: value = a + b1 k + c max(k - t, 0)
    Xk = np.stack([np.ones((len(knots), K)), np.broadcast_to(x, (len(knots), K)),
                   np.maximum(x - knots[:, None], 0.0)], axis=-1)
    beta_k, rss_k = _wls(Xk, y[..., None, :], w[..., None, :])
    kc_k = np.broadcast_to(knots, rss_k.shape)
    # k_c strictly between x[j] and x[j + 1]: value = a + b1 k + c k I + d I, I = (k >= x[j + 1]), k_c = -d / c
    inside = (x[None, :] >= x[2:K - 1, None]).astype(float)
    Xs = np.stack([np.ones_like(inside), np.broadcast_to(x, inside.shape), x * inside, inside], axis=-1)
    beta_s, rss_s = _wls(Xs, y[..., None, :], w[..., None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        kc_s = -beta_s[..., 3] / beta_s[..., 2]
    ok = (kc_s > x[1:K - 2]) & (kc_s < x[2:K - 1])
    rss_s = np.where(ok, rss_s, np.inf)
    # candidates in order of k_c: knot 1, segment 1-2, knot 2, ..., knot K-2
    n_seg = K - 3
    order = np.r_[np.arange(0, 2 * n_seg + 1, 2), np.arange(1, 2 * n_seg, 2)].argsort()
    rss = np.concatenate([rss_k, rss_s], -1)[..., order]
    kc = np.concatenate([kc_k, np.where(ok, kc_s, np.nan)], -1)[..., order]
    a = np.concatenate([beta_k[..., 0], beta_s[..., 0]], -1)[..., order]
    b1 = np.concatenate([beta_k[..., 1], beta_s[..., 1]], -1)[..., order]
    c = np.concatenate([beta_k[..., 2], beta_s[..., 2]], -1)[..., order]
    best = np.argmin(rss, axis=-1)[..., None]
    pick = lambda v: np.take_along_axis(v, best, -1)[..., 0]  # noqa: E731
    return {"k_c": pick(kc), "intercept": pick(a), "slope_before": pick(b1), "slope_after": pick(b1) + pick(c),
            "rss": pick(rss)}


def trend_at(fit: dict, k) -> np.ndarray:
    """The fitted trend (hinge or line) at k."""
    b1 = fit.get("slope_before", fit.get("slope"))
    b2 = fit.get("slope_after", b1)
    kc = fit.get("k_c", 0.0)
    return fit["intercept"] + b1 * k + (b2 - b1) * np.maximum(k - kc, 0.0)


def break_even_k(fit: dict, baseline, k_first, k_max) -> np.ndarray:
    """Where the fitted trend (hinge or line) on [k_first, k_max] regains ``baseline`` for good: 0 when it is
    never below it, infinite when it is not back by k_max; batched."""
    b1 = np.asarray(fit.get("slope_before", fit.get("slope")), float)
    b2 = np.asarray(fit.get("slope_after", b1), float)
    kc = np.clip(np.asarray(fit.get("k_c", k_first), float), k_first, k_max)
    d0, dc, dm = (trend_at(fit, k) - baseline for k in (k_first, kc, k_max))
    with np.errstate(divide="ignore", invalid="ignore"):
        on_second = kc - dc / b2   # crossing from below on [k_c, k_max]
        on_first = k_first - d0 / b1  # crossing from below on [k_first, k_c]
    out = np.where(dc < 0, on_second, np.where(d0 < 0, on_first, 0.0))
    out = np.where(dm < 0, np.inf, out)
    return np.where(np.isnan(d0 + dc + dm), np.nan, out)


# -- one fit on ``bootstrap.ByK`` (the k means, k = 0 first) --------------------------------------------------------
def _split(s: ByK) -> tuple[float, ByK]:
    """The baseline (mean at k = 0; NaN without one) and the trained k of ``s``."""
    if len(s.x) and s.x[0] == 0:
        return float(s.mean[0]), ByK(s.x[1:], s.n[1:], s.mean[1:], s.ss)
    return float("nan"), s


def hinge_fit(s: ByK) -> dict:
    """The least-squares hinge on the trained k: k_c, intercept a, slopes b1 (before) and b2 (after), the RSS
    (within-k included), and the baseline and first trained k that ``break_even`` measures against."""
    baseline, t = _split(s)
    f = {q: float(v) for q, v in fit_hinge(t.x, t.mean, t.n).items()}
    return {**f, "rss": f["rss"] + t.ss, "baseline": baseline, "k_first": float(t.x[0])}


def break_even(fit: dict, k_max: float) -> float:
    """Where the fitted curve of ``hinge_fit`` is back at the baseline (without one: at its own value at k = 0)
    for good: 0 if it never falls below it, infinite if it does not come back by ``k_max``."""
    baseline = fit.get("baseline", float("nan"))
    baseline = fit["intercept"] if math.isnan(baseline) else baseline
    return float(break_even_k(fit, baseline, fit.get("k_first", 0.0), k_max))


# -- the (k, draw) cells and the variance model --------------------------------------------------------------------
@dataclass
class Cells:
    """A target's runs as (k, draw) means: the inputs of the fits and of the variance model."""
    x: np.ndarray       # trained k (K,)
    m: np.ndarray       # (..., K, D) mean over seeds of each (k, draw) model; NaN where it has no run
    n: np.ndarray       # (..., K, D) runs per cell
    base: np.ndarray    # (...) mean of the k = 0 runs; NaN without any


def cells(g: Grid) -> Cells:
    """The (k, draw) means of ``g``."""
    n = (~np.isnan(g.values)).sum(-1).astype(float)
    with np.errstate(invalid="ignore"):
        m = np.nansum(np.nan_to_num(g.values, nan=0.0), -1) / np.where(n > 0, n, np.nan)
    base = np.asarray(g.baseline.mean() if len(g.baseline) else np.nan)
    return Cells(g.counts.astype(float), m, n, base)


def k_means(c: Cells) -> tuple[np.ndarray, np.ndarray]:
    """Each k's mean over all its runs, and its run count (the fits' weights)."""
    w = c.n.sum(-1)
    y = (np.nan_to_num(c.m) * c.n).sum(-1) / np.where(w > 0, w, np.nan)
    return y, w


def interaction_ss(c: Cells) -> tuple[np.ndarray, int]:
    """Sum of squares (per run) of the (k, draw) means about their k means and draw means, and its degrees of
    freedom: cell noise only, whatever the trend and the draw offsets."""
    y, _ = k_means(c)
    r = c.m - y[..., None]
    nd = c.n.sum(-2)
    rd = (np.nan_to_num(r) * c.n).sum(-2) / np.where(nd > 0, nd, np.nan)
    ss = np.nansum(c.n * (r - rd[..., None, :]) ** 2, axis=(-2, -1))
    K, D = c.m.shape[-2:]
    filled = int((c.n.reshape(-1, K, D)[0] > 0).sum())
    return ss, filled - K - D + 1


@dataclass
class Variances:
    """The variance model of one fitted trend: estimates and their degrees of freedom."""
    cell: float         # per-run variance of a (k, draw) mean: its variance x runs in it
    df_cell: int
    seed: float         # variance of one run within its cell (k = 0 included)
    df_seed: int
    draw: float         # variance of the draws' mean residuals (draw offsets plus averaged cell noise)
    df_draw: int


def variances(c: Cells, g: Grid, fitted: np.ndarray, n_params: int) -> Variances:
    """The variance model around ``fitted`` (the trend at each trained k) with ``n_params`` trend parameters."""
    y, w = k_means(c)
    ss_int, df_int = interaction_ss(c)
    rss = float(np.nansum(w * (y - fitted) ** 2))
    df_cell = max(df_int + len(c.x) - n_params, 1)
    filled = ~np.isnan(g.values)
    within = float(np.nansum((g.values - c.m[..., None]) ** 2))
    if len(g.baseline):
        within += float(((g.baseline - g.baseline.mean()) ** 2).sum())
    df_seed = int((filled.sum(-1) - 1).clip(0).sum() + max(len(g.baseline) - 1, 0))
    resid = c.m - fitted[:, None]
    nd = c.n.sum(0)
    rd = (np.nan_to_num(resid) * c.n).sum(0) / np.where(nd > 0, nd, np.nan)
    rd = rd[nd > 0]
    return Variances(cell=(float(ss_int) + rss) / df_cell, df_cell=df_cell,
                     seed=within / df_seed if df_seed else float("nan"), df_seed=df_seed,
                     draw=float(rd.var(ddof=1)) if len(rd) > 1 else 0.0, df_draw=max(len(rd) - 1, 1))


def simulate(c: Cells, fitted: np.ndarray, v: Variances, n_base: int, z: dict) -> Cells:
    """Replicates of ``c`` from the trend ``fitted`` and the variance model ``v``, each with its own variances
    drawn from their scaled inverse chi-square distributions; ``z``: the random draws (``normal_draws``)."""
    cell = v.cell * v.df_cell / z["chi_cell"]
    if v.df_seed:  # a model's mean over seeds varies at least as much as its seeds' mean
        cell = np.maximum(cell, v.seed * v.df_seed / z["chi_seed"])
    per_draw = c.n.sum(0).mean()
    draw = np.maximum(v.draw * v.df_draw / z["chi_draw"] - cell / per_draw, 0.0)
    m = (fitted[:, None] + np.sqrt(draw)[:, None, None] * z["draw"][:, None, :]
         + np.sqrt(cell[:, None, None] / np.where(c.n > 0, c.n, 1.0)) * z["cell"])
    m = np.where(c.n > 0, m, np.nan)
    base = c.base + np.sqrt(cell / max(n_base, 1)) * z["base"]  # the k = 0 model: one model, like a cell
    return Cells(c.x, m, np.broadcast_to(c.n, m.shape), base)


def normal_draws(rng: np.random.Generator, n: int, shape: tuple[int, int], v: Variances) -> dict:
    """The random draws of ``simulate`` for n replicates of a (K, D) design."""
    return {"cell": rng.standard_normal((n, *shape)), "draw": rng.standard_normal((n, shape[1])),
            "base": rng.standard_normal(n), "chi_cell": rng.chisquare(v.df_cell, n),
            "chi_seed": rng.chisquare(max(v.df_seed, 1), n), "chi_draw": rng.chisquare(v.df_draw, n)}


def resampled(g: Grid, n: int, rng: np.random.Generator) -> Cells:
    """n replicates of the two-stage resampling of ``bootstrap.py`` (draws, then seeds), as (k, draw) means."""
    reps = [cells(resample(g, rng)[0]) for _ in range(n)]
    return Cells(reps[0].x, np.stack([r.m for r in reps]), np.stack([r.n for r in reps]),
                 np.array([r.base for r in reps], float))


def statistic(c: Cells) -> np.ndarray:
    """(RSS_line - RSS_hinge) / RSS_hinge of the k means, the hinge's RSS with the cells' interaction; batched."""
    y, w = _valid_k_means(c)[:2]
    rss_line, rss_hinge = fit_line(c.x, y, w)["rss"], fit_hinge(c.x, y, w)["rss"]
    noise = rss_hinge + interaction_ss(c)[0]
    gain = np.maximum(rss_line - rss_hinge, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise > 0, gain / noise, np.where(gain > 0, np.inf, 0.0))


def _number(v: float) -> float:
    return v if math.isfinite(v) else float("nan")  # an infinite bound is written as empty


def _valid_k_means(c: Cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k means and weights, with replicates that lost a k (resampling) set to a placeholder; and which are valid."""
    y, w = k_means(c)
    valid = (w > 0).all(-1)
    return np.where(valid[..., None], y, c.x), np.where(valid[..., None], w, 1.0), valid


def _quantities(c: Cells, kind: str, k_max: float) -> dict:
    """The fitted quantities of one trend kind ("hinge" or "line") on (batched) cells."""
    y, w, valid = _valid_k_means(c)
    if kind == "hinge":
        f = fit_hinge(c.x, y, w)
    else:
        f = fit_line(c.x, y, w)
        f = {**f, "slope_line": f["slope"]}
    kc = f.get("k_c", c.x[0])
    f["dip"] = np.minimum(np.minimum(trend_at(f, c.x[0]), trend_at(f, kc)), trend_at(f, c.x[-1])) - c.base
    f["break_even"] = break_even_k(f, c.base, c.x[0], k_max)
    return {q: np.where(valid, v, np.nan) for q, v in f.items()}


def analyse_curve(runs: pd.DataFrame, n_boot: int, level: float, rng: np.random.Generator,
                  method: str = "parametric") -> dict:
    """One row of the critical-point table for ``runs`` (columns k, draw, seed, value) of one target."""
    if method not in METHODS:
        raise ValueError(f"interval method {method!r}: expected one of {METHODS}")
    failed = runs["failed"].to_numpy(bool) if "failed" in runs else np.zeros(len(runs), bool)
    runs = runs[~failed]  # failed fine-tuning runs (failed_runs.py) are left out, and counted
    g = grid(runs)
    c = cells(g)
    K, D = len(c.x), len(g.draws)
    row = {"n_runs": len(runs), "n_k": K + bool(len(g.baseline)), "n_draws": D, "level": level, "n_boot": n_boot,
           "n_failed": int(failed.sum())}
    reasons = []
    if K < MIN_COUNTS:
        reasons.append(f"too few distinct k ({row['n_k']}; a breakpoint needs at least {MIN_COUNTS} besides k = 0)")
    if D < MIN_DRAWS:
        reasons.append(f"too few draws ({D}; the bootstrap needs at least {MIN_DRAWS})")
    if K < 2:
        return {**row, "status": "not identified", "reason": "; ".join(reasons)}

    # the single line on k > 0 (always defined) and, with enough k, the hinge
    k_max = float(c.x[-1])
    line = _quantities(c, "line", k_max)
    row.update(slope_line=float(line["slope"]), intercept=float(line["intercept"]), k_first=float(c.x[0]),
               trend="line")
    if len(g.baseline):
        row["baseline"] = float(c.base)
    if D < MIN_DRAWS:
        return {**row, "status": "not identified", "reason": "; ".join(reasons)}
    row["interval"] = method
    hinge = _quantities(c, "hinge", k_max) if K >= MIN_COUNTS else None

    # parametric replicates around the line (its quantities and the test's null) and around the hinge
    v_line = variances(c, g, trend_at(line, c.x), 2)
    null = simulate(c, trend_at(line, c.x), v_line, len(g.baseline), normal_draws(rng, n_boot, c.m.shape, v_line))
    if method == "resample":
        data = resampled(g, n_boot, rng)
        boot_line = _quantities(data, "line", k_max)
    else:
        boot_line = _quantities(null, "line", k_max)
    row["slope_line_lo"], row["slope_line_hi"] = interval(boot_line["slope_line"], level)
    if hinge is None:
        return {**_dip(row, line, boot_line, level, k_max), "status": "not identified", "reason": "; ".join(reasons)}
    v_hinge = variances(c, g, trend_at(hinge, c.x), 4)
    if method == "resample":
        boot_hinge = _quantities(data, "hinge", k_max)
    else:
        z = normal_draws(rng, n_boot, c.m.shape, v_hinge)
        boot_hinge = _quantities(simulate(c, trend_at(hinge, c.x), v_hinge, len(g.baseline), z), "hinge", k_max)
    p = (1 + int((statistic(null) >= statistic(c)).sum())) / (1 + n_boot)
    row["p_breakpoint"] = p

    # identified only with evidence for a breakpoint and an interval that says where it is
    lo, hi = float(c.x[1]), float(c.x[-2])
    raw = interval(boot_hinge["k_c"], level)  # the replicates' k_c lie between the second and second-last k
    kc_lo, kc_hi = edge_interval(float(hinge["k_c"]), raw, c.x)
    if p >= ALPHA:
        reasons.append(f"no evidence for a breakpoint (bootstrap test p = {p:.3f} >= {ALPHA})")
    if hi == lo or raw[1] - raw[0] >= SPAN * (hi - lo):
        reasons.append(f"the {level:.0%} interval of k_c ({kc_lo:.3g} to {kc_hi:.3g}) spans the whole range of "
                       f"possible breakpoints ({c.x[0]:.3g} to {c.x[-1]:.3g})")
    if reasons:
        return {**_dip(row, line, boot_line, level, k_max), "status": "not identified", "reason": "; ".join(reasons)}

    row.update(status="identified", reason="", intercept=float(hinge["intercept"]), trend="hinge",
               k_c=float(hinge["k_c"]), k_c_lo=kc_lo, k_c_hi=kc_hi)
    for q in ("slope_before", "slope_after"):
        q_lo, q_hi = interval(boot_hinge[q], level)
        row[q], row[f"{q}_lo"], row[f"{q}_hi"] = _number(float(hinge[q])), _number(q_lo), _number(q_hi)
    row = _dip(row, hinge, boot_hinge, level, k_max)
    if row["k_c"] == lo or row["k_c"] == hi:
        edge = (float(c.x[0]), lo) if row["k_c"] == lo else (hi, k_max)
        where = (f"k_c at {row['k_c']:g}: a break anywhere from {edge[0]:g} to {edge[1]:g} fits as well (no task "
                 f"count in between)")
        row["note"] = "; ".join(filter(None, [where, row.get("note", "")]))
    return row


def edge_interval(k_c: float, bounds: tuple[float, float], x: np.ndarray) -> tuple[float, float]:
    """The k_c interval ``bounds`` (percentiles of the replicates) of a fit at ``k_c`` on the trained k ``x``, with
    each end that reaches the second (second-last) trained k moved out to the first (last): a hinge with k_c
    anywhere between the first two trained k fits exactly as well as one at the second (each point on one side is
    fitted exactly), so an interval that admits the second admits that whole gap (and likewise at the top)."""
    kc_lo, kc_hi = bounds
    lo, hi = float(x[1]), float(x[-2])
    if min(kc_lo, k_c) <= lo + 1e-9:
        kc_lo = float(x[0])
    if max(kc_hi, k_c) >= hi - 1e-9:
        kc_hi = float(x[-1])
    return kc_lo, kc_hi


def _dip(row: dict, fit: dict, boot: dict, level: float, k_max: float) -> dict:
    """``row`` with the dip and, where the trend falls below the baseline, break_even (with intervals)."""
    if math.isnan(float(fit["dip"])):
        return {**row, "note": "no k = 0 runs: no baseline, no break_even"}
    d_lo, d_hi = interval(boot["dip"], level)
    row = {**row, "dip": float(fit["dip"]), "dip_lo": d_lo, "dip_hi": d_hi}
    if not d_hi < 0:
        return {**row, "note": f"no break_even: the trend does not fall clearly below the baseline ({level:.0%} "
                               f"interval of its lowest point, dip, {d_lo:.3g} to {d_hi:.3g})"}
    be = float(fit["break_even"])
    be_lo, be_hi = interval(boot["break_even"], level)
    row.update(break_even=_number(be), break_even_lo=_number(be_lo), break_even_hi=_number(be_hi))
    if math.isinf(be) or math.isinf(be_hi):
        row["note"] = (f"an empty break_even or bound: the fitted trend is not back at the baseline by "
                       f"k = {k_max:g}")
    return row


def critical_points(series: list[tuple[str, str, pd.DataFrame]], variant: str, n_boot: int = N_BOOT,
                    level: float = LEVEL, seed: int = 0, method: str = "parametric") -> pd.DataFrame:
    """The critical-point table: one row per (target, metric, runs) of ``series``; deterministic for ``seed``."""
    rows = []
    for i, (target, metric, runs) in enumerate(series):
        rng = np.random.default_rng([seed, i])
        rows.append({"variant": variant, "target": target, "metric": metric,
                     **analyse_curve(runs, n_boot, level, rng, method)})
    return pd.DataFrame(rows).reindex(columns=COLUMNS)
