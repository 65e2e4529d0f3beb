"""Gather the fine-tuning runs' ``metrics.json`` files into the scaling table and summarize it."""

from __future__ import annotations

import json
import os

import pandas as pd

from .evaluation import ALL_METRICS
from .io import atomic_path

# One row per fine-tuning run; k = 0 is the model without pre-finetuning (draw 0, shared by all draws).
# ``value`` is the target's primary metric (named in ``metric``); every metric of its family follows,
# empty where the family has no such metric. ``percent`` is the share of training data (sample efficiency).
REQUIRED = ["k", "draw", "target", "seed", "metric", "value"]
COLUMNS = ["variant", "k", "draw", "target", "family", "seed", "percent", "metric", "value", *ALL_METRICS]
SORT_KEYS = ["k", "draw", "target", "percent", "seed"]


def collect(paths: list[str], variant: str) -> pd.DataFrame:
    """One row per ``metrics.json`` with columns ``COLUMNS``, sorted by (k, draw, target, seed).

    The ``variant`` column is set to ``variant`` for every row, because the k = 0 baseline runs are
    shared by all variants and carry whichever variant name they were produced under.
    """
    rows = []
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(f"{path}: missing required key(s) {missing}")
        rows.append({"variant": variant, "family": record.get("family", ""), "percent": record.get("percent", 100),
                     **{key: record[key] for key in REQUIRED}, **record.get("metrics", {})})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(SORT_KEYS, ignore_index=True)


def _describe(groups) -> pd.DataFrame:
    stats = groups["value"].agg(["mean", "std", "min", "max", "count"])
    return stats.rename(columns={"count": "n"}).reset_index()


def mean_over_targets(df: pd.DataFrame) -> pd.DataFrame:
    """Each (k, draw, seed)'s ``value`` averaged over its targets; columns k, draw, seed, value."""
    return df.groupby(["k", "draw", "seed"], as_index=False)["value"].mean()


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (target, k): mean, std, min, max and n of ``value`` over draws and seeds.

    Extra rows with target == "mean" summarize ``mean_over_targets`` per k: each (k, draw, seed) is
    first averaged over its targets, then those averages are summarized. std is the sample standard
    deviation (NaN when n == 1).
    """
    per_target = _describe(df.groupby(["target", "k"]))
    mean_rows = _describe(mean_over_targets(df).groupby("k")).assign(target="mean")
    return pd.concat([per_target, mean_rows[per_target.columns]], ignore_index=True)


def efficiency_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (target, k, percent): mean, std, min, max and n of ``value`` over draws and seeds."""
    return _describe(df.groupby(["target", "k", "percent"]))


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
