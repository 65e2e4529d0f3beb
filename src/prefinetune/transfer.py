"""Per-task transfer: the effect on a target of having one pool task in the subset, holding k fixed.

Estimator (matched differences within each k): at each k, the draws whose subset holds the task are compared
with the draws whose subset does not, on the mean over seeds of each (k, draw) model. The per-k differences
are averaged with weights n_with * n_without / (n_with + n_without), which is the estimate of a regression of
the value on one effect per k plus the task's inclusion indicator. Intervals: the two-stage bootstrap of
``bootstrap.py`` (draws, then seeds within them), each resampled draw keeping its own subsets.

The design identifies a task's effect only where some draws at some k hold it and others do not: not a task in
every subset (e.g. the targets under ``targets_in_pool``) or in none, and not with few such (k, draw) models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import grid, interval, resample

MIN_MODELS = 3  # (k, draw) models needed on each side (with and without the task) for an estimate
MIN_DRAWS = 2   # distinct draws needed on each side: one draw against another compares two whole subsets
COLUMNS = ["variant", "target", "metric", "task", "identified", "reason", "effect", "effect_lo", "effect_hi",
           "effect_sd", "k_compared", "models_with", "models_without", "level", "n_boot"]


def _effects(means: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Matched-difference estimates for every task at once. means (K, D); inside (P, K, D) booleans."""
    valid = ~np.isnan(means)
    with_ = (inside & valid).sum(-1)
    without = (~inside & valid).sum(-1)
    m = np.nan_to_num(means)
    diff = (inside * m).sum(-1) / np.maximum(with_, 1) - ((~inside & valid) * m).sum(-1) / np.maximum(without, 1)
    weight = np.where((with_ > 0) & (without > 0), with_ * without / np.maximum(with_ + without, 1), 0.0)
    total = weight.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weight * diff).sum(-1) / total, np.nan)


def transfer_target(runs: pd.DataFrame, orders: dict[int, list[str]], tasks: list[str], n_boot: int,
                    level: float, rng: np.random.Generator) -> pd.DataFrame:
    """One target's rows: ``runs`` (columns k, draw, seed, value; k = 0 is ignored), ``orders`` per draw."""
    g = grid(runs[runs["k"] > 0])
    inside = np.array([[[task in orders[int(d)][:int(k)] for d in g.draws] for k in g.counts] for task in tasks],
                      dtype=bool).reshape(len(tasks), len(g.counts), len(g.draws))
    means = np.nanmean(g.values, axis=-1) if g.values.size else np.empty((len(g.counts), len(g.draws)))
    effect = _effects(means, inside)
    boot = np.empty((n_boot, len(tasks)))
    for i in range(n_boot):
        r, picked = resample(g, rng)
        boot[i] = _effects(np.nanmean(r.values, axis=-1), inside[:, :, picked])

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
        else:
            reason = ""
        row = {"task": task, "identified": not reason, "reason": reason, "k_compared": int(varies[j].sum()),
               "models_with": int(with_[j]), "models_without": int(without[j]), "level": level, "n_boot": n_boot}
        if not reason:
            lo, hi = interval(boot[:, j], level)
            row.update(effect=float(effect[j]), effect_lo=lo, effect_hi=hi,
                       effect_sd=float(effect[j] / sd) if sd > 0 else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_table(series: list[tuple[str, str, pd.DataFrame]], orders: dict[int, list[str]], variant: str,
                   n_boot: int, level: float, seed: int = 0) -> pd.DataFrame:
    """The transfer table: a row per (target of ``series``, task in any order); deterministic for ``seed``."""
    tasks = sorted({t for order in orders.values() for t in order})
    parts = []
    for i, (target, metric, runs) in enumerate(series):
        part = transfer_target(runs, orders, tasks, n_boot, level, np.random.default_rng([seed, i]))
        parts.append(part.assign(variant=variant, target=target, metric=metric))
    return pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
