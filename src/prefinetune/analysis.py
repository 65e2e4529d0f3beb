"""Gather the fine-tuning runs' ``metrics.json`` files into the scaling table and summarize it."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

import pandas as pd

from .config import is_reference
from .failed_runs import FIELDS, failed
from .families import ALL_METRICS
from .faults import Fault
from .io import atomic_path
from .tasks import read_yaml

# One row per fine-tuning run; k = 0 is the model without pre-finetuning (draw 0, shared by all draws).
# ``value`` is the target's primary metric (named in ``metric``); every metric of its family follows,
# empty where the family has no such metric. ``percent`` is the share of training data (sample efficiency).
# A reference model's run (config reference_models) has the variant reference:<name> and no k: it is a level to
# compare the curve with, not a point of it (:func:`read_scaling` and the figures keep it apart).
# ``chance``, ``loss_start``, ``loss_end`` and ``loss_chance`` are what the failed-run rule reads, ``failed`` its
# verdict (failed_runs.py): the critical point and the transfer map leave failed runs out.
REQUIRED = ["k", "draw", "target", "seed", "metric", "value"]
COLUMNS = ["variant", "k", "draw", "target", "family", "seed", "percent", "metric", "value", *ALL_METRICS,
           *FIELDS, "failed"]
SORT_KEYS = ["k", "draw", "target", "percent", "seed"]


def collect(paths: list[str], variant: str) -> pd.DataFrame:
    """One row per ``metrics.json`` with columns ``COLUMNS``, sorted by (k, draw, target, seed).

    The ``variant`` column is set to ``variant`` for every row, because the k = 0 baseline runs are
    shared by all variants and carry whichever variant name they were produced under; a reference model's run
    keeps its own (reference:<name>), with no k. With such rows, k is an integer column with empty cells.
    """
    rows = []
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(f"{path}: missing required key(s) {missing}")
        check_numbers(record, path)
        reference = is_reference(record.get("variant"))
        rows.append({"variant": record["variant"] if reference else variant, "family": record.get("family", ""),
                     "percent": record.get("percent", 100), **{key: record[key] for key in REQUIRED},
                     **record.get("metrics", {}), **{key: record.get(key) for key in FIELDS}})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["failed"] = failed(df)
    if df["k"].isna().any():  # reference rows: k stays whole numbers in the CSV (Int64), empty for them
        df["k"] = df["k"].astype("Int64")
    references = df["variant"].map(is_reference)
    return pd.concat([df[~references].sort_values(SORT_KEYS), df[references].sort_values(["variant", "target", "seed"])],
                     ignore_index=True)


def check_numbers(record: dict, path) -> None:
    """A run's value and metrics are finite numbers: a NaN or inf (or null) is never a point of the curve."""
    fields = {"value": record["value"], **{f"metrics.{k}": v for k, v in (record.get("metrics") or {}).items()}}
    for field, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Fault(f"{path}: {field}: {value!r} is not a finite number; rerun that job (delete the file)")


def split_references(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the curve's runs, the reference models' runs) of a scaling table; k of the curve's runs as integers."""
    references = df["variant"].map(is_reference) if "variant" in df else pd.Series(False, index=df.index)
    curve = df[~references].copy()
    if len(curve) and "k" in curve:
        curve["k"] = curve["k"].astype(int)
    return curve, df[references].copy()


def describe(groups) -> pd.DataFrame:
    """mean, std, min, max and n of ``value`` per group."""
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
    per_target = describe(df.groupby(["target", "k"]))
    mean_rows = describe(mean_over_targets(df).groupby("k")).assign(target="mean")
    return pd.concat([per_target, mean_rows[per_target.columns]], ignore_index=True)


def efficiency_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (target, k, percent): mean, std, min, max and n of ``value`` over draws and seeds."""
    return describe(df.groupby(["target", "k", "percent"]))


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


# -- the study's answer: critical point and transfer (breakpoint.py, transfer.py) --------------------------------------
STANDARDISED = "standardised"  # the metric of the mean over targets
CLI_REQUIRED = ["k", "draw", "target", "seed", "value"]


def standardised_mean(df: pd.DataFrame, scale: tuple[pd.Series, pd.Series] | None = None) -> pd.DataFrame:
    """Each (k, draw, seed)'s mean over targets of the standardised value, so that no metric dominates.

    A target's value is standardised as (value - its mean at k = 0) / its standard deviation over all its runs
    (1 where that is 0 or undefined): 0 is the baseline, 1 is one standard deviation of that target. Failed runs
    (a ``failed`` column) are left out, of the scale too: a (k, draw, seed)'s mean is over the targets whose run
    did not fail, and it is marked ``failed`` where every one did. ``scale``: another table's (centre, sd) of
    :func:`target_scale` instead of ``df``'s own (two curves on one scale).
    """
    if "failed" in df:
        kept = df[~df["failed"].to_numpy(bool)]
        keys = df[["k", "draw", "seed"]].drop_duplicates()
    else:
        kept, keys = df, None
    centre, sd = scale or target_scale(kept)
    scaled = kept.assign(value=(kept["value"] - kept["target"].map(centre)) / kept["target"].map(sd))
    mean = mean_over_targets(scaled)
    if keys is None:
        return mean
    mean = keys.merge(mean, on=["k", "draw", "seed"], how="left").sort_values(["k", "draw", "seed"])
    return mean.assign(failed=mean["value"].isna()).reset_index(drop=True)


def target_scale(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each target's centre (its mean at k = 0, else over all its runs) and spread (its standard deviation over all
    its runs, 1 where that is 0 or undefined), indexed by target: the scale of :func:`standardised_mean`."""
    values = df["value"].groupby(df["target"])
    centre = df[df["k"] == 0].groupby("target")["value"].mean().reindex(values.mean().index).fillna(values.mean())
    sd = values.std()
    return centre, sd.where(sd > 0, 1.0)


def curve_series(df: pd.DataFrame, scale: tuple[pd.Series, pd.Series] | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """(target, metric, runs) for every target, then ("mean", "standardised", the standardised mean; ``scale``:
    see :func:`standardised_mean`)."""
    metric_of = df.groupby("target")["metric"].first() if "metric" in df else {}
    series = [(t, str(metric_of.get(t, "value")), df[df["target"] == t]) for t in sorted(df["target"].unique())]
    return [*series, ("mean", STANDARDISED, standardised_mean(df, scale))]


def critical_table(df: pd.DataFrame, variant: str, **kwargs) -> pd.DataFrame:
    """The critical-point table of one curve (see ``breakpoint.critical_points``)."""
    from .breakpoint import critical_points

    return critical_points(curve_series(df), variant, **kwargs)


def read_scaling(path: str | os.PathLike) -> pd.DataFrame:
    """The curve's runs of a table in the ``scaling.csv`` format; only k, draw, target, seed and value are required.
    Reference models' rows (variant reference:<name>) are left out: they are no point of the curve. ``failed``
    (failed_runs.py) is read, or, where the table has no such column, set by the rule (False without its fields)."""
    df = pd.read_csv(path)
    if "variant" in df:
        df = df[~df["variant"].map(is_reference)].reset_index(drop=True)
    missing = [c for c in CLI_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (needs {CLI_REQUIRED})")
    for column in ("k", "draw", "seed", "value"):
        bad = pd.to_numeric(df[column], errors="coerce").isna()
        if bad.any():
            row = int(bad.idxmax()) + 2  # 1-based, after the header
            raise ValueError(f"{path}: row {row}: column '{column}' is not a number: {df[column][bad.idxmax()]!r}")
    df[["k", "draw", "seed"]] = df[["k", "draw", "seed"]].astype(int)
    df["value"] = df["value"].astype(float)
    if "failed" in df:  # the rule's verdict as scaling.csv wrote it; else the rule, where the table has its fields
        df["failed"] = df["failed"].astype(str).str.lower().isin(["true", "1", "1.0"])
    else:
        df["failed"] = failed(df)
    return df




def read_orders(paths: list[str | os.PathLike]) -> dict[int, list[str]]:
    """Each draw's task order from the subsets step's ``draw<d>.yaml`` files."""
    orders = {}
    for path in paths:
        record = read_yaml(path)
        if not isinstance(record, dict) or "draw" not in record or "order" not in record:
            raise ValueError(f"{path}: needs the fields 'draw' and 'order'")
        orders[int(record["draw"])] = list(record["order"])
    return orders


def transfer_map(df: pd.DataFrame, orders: dict[int, list[str]], variant: str, **kwargs) -> pd.DataFrame:
    """The per-task transfer table of one curve (see ``transfer.transfer_table``)."""
    from .breakpoint import LEVEL, N_BOOT
    from .transfer import transfer_table

    kwargs = {"n_boot": N_BOOT, "level": LEVEL, **kwargs}
    return transfer_table(curve_series(df), orders, variant, **kwargs)


def read_train_logs(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """The pre-finetuning logs ``.../k<k>/draw<d>/train_log.tsv`` as one table: k, draw, step, loss."""
    parts = []
    for path in paths:
        match = re.search(r"k(\d+)/draw(\d+)/train_log\.tsv$", str(path))
        if not match:
            raise ValueError(f"{path}: not a path of the form .../k<k>/draw<d>/train_log.tsv")
        log = pd.read_csv(path, sep="\t")
        missing = [c for c in ("step", "loss") if c not in log.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        parts.append(log[["step", "loss"]].assign(k=int(match[1]), draw=int(match[2])))
    return pd.concat(parts, ignore_index=True)[["k", "draw", "step", "loss"]]


def main(argv: list[str] | None = None) -> int:
    """``python -m prefinetune.analysis SCALING_CSV``: print the critical-point table of any such table."""
    from .breakpoint import LEVEL, N_BOOT

    parser = argparse.ArgumentParser(prog="python -m prefinetune.analysis", description=main.__doc__)
    parser.add_argument("table", help="a CSV with columns k, draw, target, seed, value (others optional)")
    parser.add_argument("--bootstrap", type=int, default=N_BOOT, help=f"bootstrap replicates (default {N_BOOT})")
    parser.add_argument("--level", type=float, default=LEVEL, help=f"confidence level (default {LEVEL})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--output", help="also write the table to this CSV")
    args = parser.parse_args(argv)
    try:
        df = read_scaling(args.table)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    variant = str(df["variant"].iloc[0]) if "variant" in df and len(df) else "main"
    table = critical_table(df, variant, n_boot=args.bootstrap, level=args.level, seed=args.seed)
    if args.output:
        write_table(table, args.output)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 80):
        print(table.drop(columns=["variant"]).to_string(index=False, na_rep=""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
