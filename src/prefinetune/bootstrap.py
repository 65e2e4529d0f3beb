"""The runs of one target as a (k, draw, seed) grid, and the two-stage bootstrap that resamples it.

Draws are the unit of random subsets: a draw's models at every k share one task order, so the bootstrap
resamples whole draws (with replacement), then the seeds within each (k, draw) cell. The k = 0 baseline is
shared by all draws; only its seeds are resampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Grid:
    counts: np.ndarray    # the distinct k > 0, sorted (K,)
    draws: np.ndarray     # the draw ids (D,)
    values: np.ndarray    # (K, D, S): the runs of each (k, draw) cell, NaN-padded at the end
    baseline: np.ndarray  # the k = 0 runs (may be empty)


def grid(runs: pd.DataFrame) -> Grid:
    """``runs`` (columns k, draw, seed, value) of one target as a ``Grid``."""
    base = runs[runs["k"] == 0].sort_values("seed")["value"].to_numpy(float)
    trained = runs[runs["k"] > 0]
    counts = np.sort(trained["k"].unique())
    draws = np.sort(trained["draw"].unique())
    width = int(trained.groupby(["k", "draw"]).size().max()) if len(trained) else 0
    values = np.full((len(counts), len(draws), width), np.nan)
    for (k, draw), cell in trained.sort_values("seed").groupby(["k", "draw"]):
        values[np.searchsorted(counts, k), np.searchsorted(draws, draw), :len(cell)] = cell["value"]
    return Grid(counts, draws, values, base)


def _resample_cells(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each cell's valid runs (NaN-padded at the end) resampled with replacement, in place of the originals."""
    n_valid = (~np.isnan(values)).sum(axis=-1, keepdims=True)
    picks = np.floor(rng.random(values.shape) * np.maximum(n_valid, 1)).astype(int)
    out = np.take_along_axis(values, picks, axis=-1)
    out[np.arange(values.shape[-1]) >= n_valid] = np.nan
    return out


def resample(g: Grid, rng: np.random.Generator) -> tuple[Grid, np.ndarray]:
    """One bootstrap replicate: draws with replacement, then seeds within each cell; also the picked draw
    positions (so that per-draw side information, such as subsets, can follow)."""
    picked = rng.integers(0, len(g.draws), len(g.draws))
    values = _resample_cells(g.values[:, picked, :], rng)
    baseline = g.baseline[rng.integers(0, len(g.baseline), len(g.baseline))] if len(g.baseline) else g.baseline
    return Grid(g.counts, g.draws[picked], values, baseline), picked


def with_values(g: Grid, values: np.ndarray, baseline: np.ndarray) -> Grid:
    return Grid(g.counts, g.draws, values, baseline)


@dataclass
class ByK:
    """Sufficient statistics of a least-squares fit against k: every run at one k has the same regressors."""
    x: np.ndarray     # distinct k, 0 first when there is a baseline
    n: np.ndarray     # runs per k
    mean: np.ndarray  # mean value per k
    ss: float         # within-k sum of squares (the part of any fit's RSS that no curve in k can explain)


def by_k(g: Grid) -> ByK:
    n = (~np.isnan(g.values)).sum(axis=(1, 2)).astype(float)
    total = np.nansum(g.values, axis=(1, 2))
    mean = total / np.maximum(n, 1)
    ss = float(np.nansum((g.values - mean[:, None, None]) ** 2))
    x = g.counts.astype(float)
    if len(g.baseline):
        base_mean = float(g.baseline.mean())
        ss += float(((g.baseline - base_mean) ** 2).sum())
        x, n, mean = np.r_[0.0, x], np.r_[float(len(g.baseline)), n], np.r_[base_mean, mean]
    keep = n > 0
    return ByK(x[keep], n[keep], mean[keep], ss)


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of ``samples`` (NaNs ignored; infinities count as beyond every finite value)."""
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail], method="inverted_cdf")  # no interpolation: infinities stay infinite
    return float(lo), float(hi)
