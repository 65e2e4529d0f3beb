"""Per-task transfer: the effect on a target of having one pool task in the subset, holding k fixed.

Estimator: a regression of the (k, draw) models' means (each over its seeds, weighted by its runs) on one level
per k, one per draw, and the task's inclusion indicator (two-way fixed effects). The task's effect is identified
by the draws whose subset holds it at a k where others do not, and, because subsets are nested, by when it
enters each draw: the change of a draw's models where the task enters, against the other draws' change over the
same k. A draw's own level (its whole chain of subsets, its training seed) cancels, so one draw against
another is never read as the effect of a task.

Uncertainty: the residual variance of that regression (per run of a model; at least the seeds' variance within
the models), with its degrees of freedom: each of ``n_boot`` replicates draws it from its scaled inverse
chi-square distribution, as the critical point's intervals do (``breakpoint.py``). Given the variance the
estimate is normal; ``p_value`` (two-sided, against no effect) averages its normal tail over the replicates
(a t test where the seeds' floor does not bind), and the interval is the percentile interval of the estimate
plus its noise under each replicate's variance. The other tasks' effects are part of that residual variance.

Many comparisons: a map of every task on every target has hundreds of cells, and at the 90 % level one in ten
cells without any effect would be starred. ``q_value`` is the Benjamini-Hochberg adjusted p-value over all the
identified cells of the table (every target and the mean), and a cell is ``starred`` at q <= ``FDR``: among the
starred cells, the expected share without an effect is at most 10 %.

The design identifies a task's effect only where some draws at some k hold it and others do not: not a task in
every subset (e.g. the targets under ``targets_in_pool``) or in none, and not with few such (k, draw) models.
Failed fine-tuning runs (a ``failed`` column, ``failed_runs.py``) are left out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .bootstrap import grid, interval
from .breakpoint import cells

MIN_MODELS = 3  # (k, draw) models needed on each side (with and without the task) for an estimate
MIN_DRAWS = 2   # distinct draws needed on each side: one draw against another compares two whole subsets
FDR = 0.10      # a cell is starred where its Benjamini-Hochberg q-value is at most this
COLUMNS = ["variant", "target", "metric", "task", "identified", "reason", "effect", "effect_lo", "effect_hi",
           "effect_sd", "k_compared", "models_with", "models_without", "level", "n_boot", "p_value", "q_value",
           "starred"]
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _within(n: np.ndarray) -> np.ndarray:
    """The (K*D, K*D) residual maker of the weighted two-way fit (a level per k and per draw) on the models with
    runs (``n`` (K, D) runs per model, the weights); a model without runs gets a zero row."""
    K, D = n.shape
    w = n.ravel().astype(float)
    X = np.concatenate([np.repeat(np.eye(K), D, 0), np.tile(np.eye(D), (K, 1))[:, 1:]], 1)[w > 0]
    M = np.zeros((K * D, K * D))
    filled = np.flatnonzero(w > 0)
    Xw = X * w[filled, None]
    M[np.ix_(filled, filled)] = np.eye(len(filled)) - X @ np.linalg.pinv(Xw.T @ X) @ Xw.T
    return M


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of ``p`` (NaN: not a test, left NaN)."""
    p = np.asarray(p, float)
    q = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if not len(tested):
        return q
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    q[order] = np.minimum(adjusted, 1.0)
    return q


def transfer_target(runs: pd.DataFrame, orders: dict[int, list[str]], tasks: list[str], n_boot: int,
                    level: float, rng: np.random.Generator) -> pd.DataFrame:
    """One target's rows: ``runs`` (columns k, draw, seed, value, optionally failed; k = 0 is ignored), ``orders``
    per draw. ``q_value`` and ``starred`` are left to :func:`transfer_table` (they need the whole table)."""
    if "failed" in runs:
        runs = runs[~runs["failed"].to_numpy(bool)]
    g = grid(runs[runs["k"] > 0])
    inside = np.array([[[task in orders[int(d)][:int(k)] for d in g.draws] for k in g.counts] for task in tasks],
                      dtype=bool).reshape(len(tasks), len(g.counts), len(g.draws))
    c = cells(g)
    w = c.n.ravel()
    M = _within(c.n)
    r = M @ np.nan_to_num(c.m.ravel())                    # the models' residuals about their k and draw levels
    x = inside.reshape(len(tasks), -1).astype(float) @ M.T  # each task's indicator, residualised the same way
    gram = (x * w) @ x.T                                  # (P, P): how the tasks' residualised indicators overlap
    info = np.diag(gram).copy()                           # a task's own: 1 / the variance of its estimate per run
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = (w * x * r).sum(-1) / info
        # the residuals' sum of squares as white noise (per run, over its degrees of freedom) or as the other
        # tasks' effects (per unit of their indicators' sum of squares): the larger variance of the estimate
        others = gram ** 2
        np.fill_diagonal(others, 0.0)
        scale = np.maximum(1.0 / (info * _df(c.n)), others.sum(-1) / info ** 2 / (info.sum() - info))
    spread = _noise(g, c, ((w * r * r).sum() - effect ** 2 * info) * scale, info, n_boot, rng)  # (n_boot, P)

    varies = (inside.any(-1) & ~inside.all(-1))  # (P, K): k where some draws hold the task and others do not
    with_ = (inside * varies[..., None]).sum((1, 2))
    without = (~inside * varies[..., None]).sum((1, 2))
    draws_with = (inside & varies[..., None]).any(1).sum(-1)  # distinct draws holding it at some compared k
    draws_without = (~inside & varies[..., None]).any(1).sum(-1)
    sd = runs["value"].std()
    rows = []
    for j, task in enumerate(tasks):
        if inside[j].all():
            reason = "in every subset: no model without it to compare with"
        elif not inside[j].any():
            reason = "in no subset: no model with it to compare with"
        elif not varies[j].any():
            reason = "no k at which some draws hold it and others do not"
        elif min(with_[j], without[j]) < MIN_MODELS or min(draws_with[j], draws_without[j]) < MIN_DRAWS:
            reason = (f"too few draws: {with_[j]} models of {draws_with[j]} draws with it, {without[j]} of "
                      f"{draws_without[j]} without, at the k compared (needs {MIN_MODELS} models of "
                      f"{MIN_DRAWS} draws each)")
        elif spread is None:
            reason = "no variance estimate: too few models for the levels of every k and draw"
        else:
            reason = ""
        row = {"task": task, "identified": not reason, "reason": reason, "k_compared": int(varies[j].sum()),
               "models_with": int(with_[j]), "models_without": int(without[j]), "level": level, "n_boot": n_boot}
        if not reason:
            z = np.abs(effect[j]) / spread[:, j]
            lo, hi = interval(effect[j] + spread[:, j] * rng.standard_normal(n_boot), level)
            row.update(effect=float(effect[j]), effect_lo=lo, effect_hi=hi,
                       effect_sd=float(effect[j] / sd) if sd > 0 else np.nan,
                       p_value=float(np.mean(_erfc(z / math.sqrt(2)).astype(float))))
        rows.append(row)
    return pd.DataFrame(rows)


def _df(n: np.ndarray) -> int:
    """Residual degrees of freedom of the two-way fit with one task's effect, on the models with runs ``n``."""
    return int((n > 0).sum()) - n.shape[0] - n.shape[1]


def _noise(g, c, var: np.ndarray, info: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray | None:
    """(n_boot, P): the SD of each task's estimate under ``n_boot`` draws of its variance ``var`` (P,) from its
    scaled inverse chi-square distribution, at least the seeds' variance per run / ``info`` (P,); ``c`` the models
    (``breakpoint.Cells``) of the runs ``g``. None without degrees of freedom for the residual variance."""
    df = _df(c.n)
    if df < 1:
        return None
    draws = np.maximum(var, 0.0) * df / rng.chisquare(df, (n_boot, 1))
    filled = ~np.isnan(g.values)
    df_seed = int((filled.sum(-1) - 1).clip(0).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        if df_seed:  # a model's mean over seeds varies at least as much as its seeds' mean
            seed = float(np.nansum((g.values - c.m[..., None]) ** 2)) / df_seed
            draws = np.maximum(draws, seed * df_seed / rng.chisquare(df_seed, (n_boot, 1)) / info)
        return np.sqrt(draws)


def transfer_table(series: list[tuple[str, str, pd.DataFrame]], orders: dict[int, list[str]], variant: str,
                   n_boot: int, level: float, seed: int = 0) -> pd.DataFrame:
    """The transfer table: a row per (target of ``series``, task in any order), with the Benjamini-Hochberg q-value
    over all its identified cells; deterministic for ``seed``."""
    tasks = sorted({t for order in orders.values() for t in order})
    parts = []
    for i, (target, metric, runs) in enumerate(series):
        part = transfer_target(runs, orders, tasks, n_boot, level, np.random.default_rng([seed, i]))
        parts.append(part.assign(variant=variant, target=target, metric=metric))
    table = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    table["q_value"] = bh_qvalues(table["p_value"].to_numpy(float))
    table["starred"] = table["q_value"] <= FDR
    return table
