"""The figures: target performance against the number of pre-finetuning tasks k (the scaling curve, with its
critical point), against the share of training data per k (sample efficiency), the per-task transfer map, the
pre-finetuning loss curves and the ablations against the main curve.

Every figure is built by a ``*_figure`` function (so that tests can measure it) and saved by ``plot_*``. Layout
is matplotlib's constrained layout with the legend outside the panels, a title wrapped to the figure's width
and a legend with as many columns as the width holds, so title and legend stay inside the canvas."""

from __future__ import annotations

import math
import os
import textwrap

import matplotlib

matplotlib.use("Agg")  # headless: cluster jobs have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .analysis import (curve_series, describe, efficiency_summary, read_scaling, split_references,  # noqa: E402
                       standardised_mean, summarize, target_scale, write_table)
from .bootstrap import by_k, grid, interval, resample  # noqa: E402
from .config import reference_name  # noqa: E402
from .io import atomic_path  # noqa: E402

MEAN_PANEL = "mean over targets (standardised)"
MEAN_YLABEL = "standardised value (sd from k = 0)"
BASELINE_LABEL = "no pre-finetuning (k=0)"



def _panel(ax, runs: pd.DataFrame, stats: pd.DataFrame, title: str, ylabel: str) -> None:
    """Draw one panel: runs as dots, mean line, mean ± std band and the k = 0 baseline."""
    stats = stats.sort_values("k")
    std = stats["std"].fillna(0.0)  # a single run has no spread
    ax.scatter(runs["k"], runs["value"], s=12, alpha=0.35, color="C0", linewidths=0, label="single run")
    ax.plot(stats["k"], stats["mean"], "-o", color="C0", markersize=4, label="mean over draws and seeds")
    ax.fill_between(stats["k"], stats["mean"] - std, stats["mean"] + std, color="C0", alpha=0.2, label="mean ± std")
    baseline = stats.loc[stats["k"] == 0, "mean"]
    if not baseline.empty:
        ax.axhline(baseline.iloc[0], color="grey", linestyle="--", linewidth=1, label=BASELINE_LABEL)
    ax.set_title(title)
    ax.set_xlabel("number of pre-finetuning tasks k")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _critical(ax, row, k_max: float) -> None:
    """Mark the fitted trend on k > 0 (the k = 0 baseline is its own level): an identified critical point with
    the hinge and k_c's interval, else the single line where it gives a break-even k; and the break-even k."""
    if row is None:
        return
    k_first = row.get("k_first", 0.0)
    if row["status"] == "identified":
        kc, a, b1, b2 = row["k_c"], row["intercept"], row["slope_before"], row["slope_after"]
        ks = np.array([k_first, kc, k_max])
        ax.plot(ks, a + b1 * ks + (b2 - b1) * np.maximum(ks - kc, 0.0), color="C3", linewidth=1.2, label="hinge fit")
        ax.axvline(kc, color="C3", linestyle=":", linewidth=1.2, label=f"k_c, {row['level']:.0%} interval shaded")
        ax.axvspan(row["k_c_lo"], row["k_c_hi"], color="C3", alpha=0.12)
    else:
        ax.text(0.02, 0.02, "k_c not identified", transform=ax.transAxes, fontsize=8, color="C3", va="bottom")
        if pd.isna(row.get("break_even")) or pd.isna(row.get("slope_line")):
            return
        ks = np.array([k_first, k_max])
        ax.plot(ks, row["intercept"] + row["slope_line"] * ks, color="C3", linewidth=1.2, linestyle="--",
                label="line fit (k > 0)")
    if pd.notna(row.get("break_even")) and row["break_even"] > 0:
        ax.plot([row["break_even"]], [row.get("baseline", row["intercept"])], "v", color="C3", markersize=7,
                label="break-even k")


def _figure(n_panels: int, nrows_per_panel: int = 1, panel_width: float = 4.2, panel_height: float = 3.4):
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols) * nrows_per_panel
    width = max(panel_width * ncols, 6.5)  # room for the title and the legend, also with one panel
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_height * nrows + 1.2), squeeze=False,
                             layout="constrained")
    return fig, axes


def _finish(fig, axes, title: str) -> None:
    """The wrapped title and one legend of every labelled artist, outside the panels at the bottom."""
    width = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(title, width=int(width * 9), break_on_hyphens=False), fontsize=12)
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        ncol = max(1, min(len(handles), int(width // 2.6)))
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=ncol, frameon=False)


def _hide_unused(axes, n_used: int) -> None:
    for ax in np.ravel(axes)[n_used:]:
        ax.set_visible(False)


def _save(fig, pdf_path, png_path) -> None:
    with atomic_path(pdf_path) as tmp:
        fig.savefig(tmp, format="pdf")
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)


def _references(ax, references: pd.DataFrame) -> None:
    """Each reference model as a horizontal band across the panel: its mean over seeds (dash-dot line) plus or
    minus one standard deviation (shaded), in a colour of its own."""
    for i, (variant, runs) in enumerate(references.groupby("variant", sort=True)):
        colour = f"C{(i + 2) % 10}"  # C0: the curve, C1: free, C3: the critical point
        mean, sd = runs["value"].mean(), runs["value"].std()
        sd = 0.0 if pd.isna(sd) else sd
        name = reference_name(variant)
        ax.axhspan(mean - sd, mean + sd, color=colour, alpha=0.12, linewidth=0)
        ax.axhline(mean, color=colour, linestyle="-.", linewidth=1.2, label=f"{name} (reference), mean ± std")


def standardised_references(curve: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """The reference models' runs on the mean panel's scale: each target's value standardised with the curve's
    own centre and spread (analysis.target_scale, as analysis.standardised_mean), then averaged over targets per
    (variant, seed)."""
    centre, sd = target_scale(curve)
    scaled = references.assign(value=(references["value"] - references["target"].map(centre))
                               / references["target"].map(sd))
    return scaled.groupby(["variant", "seed"], as_index=False)["value"].mean()


def scaling_figure(df: pd.DataFrame, title: str, critical: pd.DataFrame | None = None):
    """The scaling curve of ``df`` (the table of ``analysis.collect``): one panel per target (y = that target's
    metric) plus a panel of the standardised mean over targets; with ``critical`` (the critical-point table),
    each identified k_c, its interval, the hinge fit and the break-even k. Reference models' rows (variant
    reference:<name>) are horizontal bands (mean ± std over their seeds) on every panel. Failed runs (``failed``,
    failed_runs.py) are crosses, left out of the means as the fits leave them out."""
    df, references = split_references(df)
    marked = df["failed"].astype(str).str.lower().isin(["true", "1"]) if "failed" in df else df["k"] < 0
    failed, df = df[marked], df[~marked]
    stats = summarize(df)
    metric_of = df.groupby("target")["metric"].first()
    targets = sorted(metric_of.index)
    rows = {} if critical is None else {r["target"]: r for _, r in critical.iterrows()}
    k_max = float(df["k"].max())
    mean_runs = standardised_mean(df)
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes = _figure(len(targets) + 1)
        flat = np.ravel(axes)
        for ax, target in zip(flat, targets):
            _panel(ax, df[df["target"] == target], stats[stats["target"] == target], target, metric_of[target])
            lost = failed[failed["target"] == target]
            if len(lost):
                ax.scatter(lost["k"], lost["value"], s=18, marker="x", color="C3", label="failed run (left out)")
            _references(ax, references[references["target"] == target])
            _critical(ax, rows.get(target), k_max)
        mean_ax = flat[len(targets)]
        _panel(mean_ax, mean_runs, describe(mean_runs.groupby("k")), MEAN_PANEL, MEAN_YLABEL)
        if len(references):
            _references(mean_ax, standardised_references(df, references))
        _critical(mean_ax, rows.get("mean"), k_max)
        _hide_unused(axes, len(targets) + 1)
        _finish(fig, axes, title)
    return fig


def plot_scaling(df: pd.DataFrame, pdf_path: str | os.PathLike, png_path: str | os.PathLike, title: str,
                 critical: pd.DataFrame | None = None) -> None:
    """Save ``scaling_figure`` as PDF and PNG, atomically."""
    _save(scaling_figure(df, title, critical), pdf_path, png_path)


def efficiency_figure(df: pd.DataFrame, title: str):
    """Sample efficiency: per target, its metric against the % of training data, one line per k (mean over
    draws and seeds, ± std band)."""
    stats = efficiency_summary(df)
    metric_of = df.groupby("target")["metric"].first()
    targets = sorted(metric_of.index)
    counts = sorted(stats["k"].unique())
    colors = plt.get_cmap("viridis")([i / max(len(counts) - 1, 1) for i in range(len(counts))])
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes = _figure(len(targets))
        for ax, target in zip(np.ravel(axes), targets):
            for k, color in zip(counts, colors):
                s = stats[(stats["target"] == target) & (stats["k"] == k)].sort_values("percent")
                ax.plot(s["percent"], s["mean"], "-o", markersize=3, color=color, label=f"k={k}")
                ax.fill_between(s["percent"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                                color=color, alpha=0.12)
            ax.set_title(target)
            ax.set_xlabel("% of the training data")
            ax.set_ylabel(metric_of[target])
            ax.grid(alpha=0.3)
        _hide_unused(axes, len(targets))
        _finish(fig, axes, title)
    return fig


def plot_efficiency(df: pd.DataFrame, pdf_path: str | os.PathLike, png_path: str | os.PathLike, title: str) -> None:
    _save(efficiency_figure(df, title), pdf_path, png_path)


def transfer_figure(table: pd.DataFrame, title: str):
    """The transfer map: pool tasks (rows) by targets (columns). Colour: the effect in standard deviations of
    the target; text: the effect in the target's metric, starred where ``starred`` (its Benjamini-Hochberg
    q-value at most transfer.FDR, 10 %); grey cells
    with "n/i": not identified by the design."""
    targets = list(dict.fromkeys(table["target"]))
    tasks = sorted(table["task"].unique())
    cells = table.set_index(["task", "target"])
    z = np.array([[cells.loc[(t, g), "effect_sd"] for g in targets] for t in tasks], dtype=float)
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    width = max(1.6 * len(targets) + 3.0, 6.5)
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10}):
        fig, ax = plt.subplots(figsize=(width, 0.32 * len(tasks) + 2.4), layout="constrained")
        ax.set_facecolor("0.85")  # not identified: NaN cells show the background
        image = ax.imshow(z, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        for i, t in enumerate(tasks):
            for j, g in enumerate(targets):
                row = cells.loc[(t, g)]
                if not row["identified"]:
                    text = "n/i"
                else:
                    star = "*" if row["starred"] else ""
                    text = f"{row['effect']:+.3f}{star}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(targets)), [f"{g}\n({cells.loc[(tasks[0], g), 'metric']})" for g in targets])
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_xlabel("target")
        ax.set_ylabel("pool task")
        fig.colorbar(image, ax=ax, label="effect of the task in the subset (sd of the target)")
        fig.suptitle(textwrap.fill(title, width=int(width * 9), break_on_hyphens=False), fontsize=11)
    return fig


def plot_transfer(table: pd.DataFrame, pdf_path, png_path, title: str) -> None:
    _save(transfer_figure(table, title), pdf_path, png_path)


def loss_figure(logs: pd.DataFrame, title: str):
    """Pre-finetuning loss against update: one line per (k, draw), coloured by k. ``logs``: columns k, draw,
    step, loss."""
    counts = sorted(logs["k"].unique())
    colors = plt.get_cmap("viridis")([i / max(len(counts) - 1, 1) for i in range(len(counts))])
    styles = ["-", "--", ":", "-."]
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes = _figure(1, panel_width=6.5, panel_height=4.0)
        ax = axes[0, 0]
        for k, color in zip(counts, colors):
            for i, (draw, log) in enumerate(logs[logs["k"] == k].groupby("draw")):
                ax.plot(log["step"], log["loss"], styles[i % len(styles)], color=color, linewidth=1, alpha=0.8,
                        label=f"k={k}" if i == 0 else None)
        ax.set_xlabel("update")
        ax.set_ylabel("pre-finetuning loss (scaled)")
        ax.set_title("one line per k and draw (line style: draw)")
        ax.grid(alpha=0.3)
        _finish(fig, axes, title)
    return fig


def plot_losses(logs: pd.DataFrame, pdf_path, png_path, title: str) -> None:
    _save(loss_figure(logs, title), pdf_path, png_path)


def differences(tables: dict[str, pd.DataFrame], n_boot: int, level: float, seed: int = 0) -> pd.DataFrame:
    """Each variant's mean at each k > 0 minus the first variant's (the main curve), per target and for the
    standardised mean, with a bootstrap interval (draws, then seeds, resampled in each variant independently)."""
    main_df = next(iter(tables.values()))
    main_series = {t: runs for t, _, runs in curve_series(main_df)}
    rows = []
    for v, (variant, df) in enumerate(list(tables.items())[1:]):
        for i, (target, _, runs) in enumerate(curve_series(df)):
            a, b = grid(runs[runs["k"] > 0]), grid(main_series[target][main_series[target]["k"] > 0])
            rng = np.random.default_rng([seed, v, i])
            point = by_k(a).mean - by_k(b).mean
            boot = np.array([by_k(resample(a, rng)[0]).mean - by_k(resample(b, rng)[0]).mean for _ in range(n_boot)])
            for j, k in enumerate(a.counts):
                lo, hi = interval(boot[:, j], level)
                rows.append({"variant": variant, "target": target, "k": int(k), "difference": point[j], "lo": lo,
                             "hi": hi})
    return pd.DataFrame(rows, columns=["variant", "target", "k", "difference", "lo", "hi"])


def comparison_figure(tables: dict[str, pd.DataFrame], title: str, n_boot: int, level: float):
    """The main curve and every ablation per target on shared axes (top row: mean over draws and seeds), and
    each ablation's difference from the main curve at each k with its interval (bottom row)."""
    diff = differences(tables, n_boot, level)
    series = {name: curve_series(df) for name, df in tables.items()}
    names = [t for t, _, _ in next(iter(series.values()))]
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        ncols = len(names)
        width = max(4.2 * ncols, 6.5)
        fig, axes = plt.subplots(2, ncols, figsize=(width, 7.0 + 1.2), squeeze=False, sharex="col",
                                 layout="constrained")
        for c, target in enumerate(names):
            top, bottom = axes[0, c], axes[1, c]
            for v, (variant, parts) in enumerate(series.items()):
                _, metric, runs = next(p for p in parts if p[0] == target)
                means = runs.groupby("k")["value"].mean()
                top.plot(means.index, means.values, "-o", markersize=4, color=f"C{v}", label=variant)
                d = diff[(diff["variant"] == variant) & (diff["target"] == target)]
                if len(d):
                    offset = 0.15 * (v - (len(series) - 1) / 2) * max(means.index.max() / 20, 0.2)
                    bottom.errorbar(d["k"] + offset, d["difference"], yerr=[d["difference"] - d["lo"],
                                    d["hi"] - d["difference"]], fmt="o", color=f"C{v}", capsize=3, markersize=4)
            top.set_title(MEAN_PANEL if target == "mean" else target)
            top.set_ylabel(MEAN_YLABEL if target == "mean" else metric)
            top.grid(alpha=0.3)
            bottom.axhline(0, color="grey", linestyle="--", linewidth=1)
            bottom.set_xlabel("number of pre-finetuning tasks k")
            bottom.set_ylabel(f"ablation - main ({level:.0%} interval)")
            bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
            bottom.grid(alpha=0.3)
        _finish(fig, axes, title)
    return fig


def plot_comparison(tables: dict[str, pd.DataFrame], pdf_path, png_path, title: str, n_boot: int,
                    level: float) -> None:
    _save(comparison_figure(tables, title, n_boot, level), pdf_path, png_path)


def write_comparison(variants: list[str], tables: list, criticals: list, table_path, pdf_path, png_path,
                     title: str, n_boot: int, level: float) -> None:
    """The ablations step: every variant's critical-point rows in one table (main first), and the figure (failed
    runs left out, as the fits leave them out)."""
    write_table(pd.concat([pd.read_csv(p) for p in criticals], ignore_index=True), table_path)
    scaling = {v: t[~t["failed"]] for v, t in ((v, read_scaling(p)) for v, p in zip(variants, tables))}
    plot_comparison(scaling, pdf_path, png_path, title, n_boot, level)


def null_figure(paired: list[tuple[str, str, pd.DataFrame]], content: pd.DataFrame, title: str):
    """Per target and for the standardised mean (``content.paired_runs``): the main curve and the null arm at the
    null arm's task counts (top row: mean over draws and seeds, ± std band; the shared k = 0 baseline dashed), and
    content transfer, main - null, with its interval at each k (bottom row: ``content.content_table``)."""
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes = _figure(len(paired), nrows_per_panel=2)
        tops, bottoms = axes[0::2].ravel(), axes[1::2].ravel()
        for top, bottom, (target, metric, runs) in zip(tops, bottoms, paired):
            for arm, colour, label in (("main", "C0", "main curve"), ("null", "C1", "null arm")):
                stats = runs.groupby("k")[arm].agg(["mean", "std"]).fillna(0.0)
                top.plot(stats.index, stats["mean"], "-o", color=colour, markersize=4, label=f"{label}, mean ± std")
                top.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=colour,
                                 alpha=0.15)
            baseline = runs.loc[runs["k"] == 0, "main"]
            if len(baseline):
                top.axhline(baseline.mean(), color="grey", linestyle="--", linewidth=1, label=BASELINE_LABEL)
            top.set_title(MEAN_PANEL if target == "mean" else target)
            top.set_ylabel(MEAN_YLABEL if target == "mean" else metric)
            d = content[content["target"] == target]
            bottom.errorbar(d["k"], d["content"], yerr=[d["content"] - d["content_lo"], d["content_hi"] - d["content"]],
                            fmt="o", color="C2", capsize=3, markersize=4, label="content transfer")
            bottom.axhline(0, color="grey", linestyle="--", linewidth=1)
            bottom.set_ylabel("main - null" + (f" ({d['level'].iloc[0]:.0%} interval)" if len(d) else ""))
            bottom.set_xlim(top.get_xlim())  # the same k as the curves above
            for ax in (top, bottom):
                ax.set_xlabel("number of pre-finetuning tasks k")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
        _hide_unused(tops, len(paired))
        _hide_unused(bottoms, len(paired))
        _finish(fig, axes, title)
    return fig


def plot_null(paired, content: pd.DataFrame, pdf_path, png_path, title: str) -> None:
    _save(null_figure(paired, content, title), pdf_path, png_path)
