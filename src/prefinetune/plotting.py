"""The figures: target performance against the number of pre-finetuning tasks k (the scaling curve), and
against the share of training data per k (sample efficiency)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")  # headless: cluster jobs have no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .analysis import efficiency_summary, mean_over_targets, summarize  # noqa: E402
from .io import atomic_path  # noqa: E402

MEAN_PANEL = "mean over targets"
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


def _grid(n_panels: int, legend_height: float = 0.5):
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    height = 3.4 * nrows + legend_height
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes, legend_height / height


def _save(fig, pdf_path, png_path) -> None:
    with atomic_path(pdf_path) as tmp:
        fig.savefig(tmp, format="pdf")
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)


def plot_scaling(df: pd.DataFrame, pdf_path: str | os.PathLike, png_path: str | os.PathLike, title: str) -> None:
    """Save the scaling curve of ``df`` (the table of ``analysis.collect``) as PDF and PNG, atomically.

    One panel per target (y = that target's metric) plus a panel of the mean over targets.
    """
    stats = summarize(df)
    metric_of = df.groupby("target")["metric"].first()
    targets = sorted(metric_of.index)
    metrics = sorted(set(metric_of))
    mean_ylabel = f"mean {metrics[0]}" if len(metrics) == 1 else "mean of target metrics"

    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes, legend = _grid(len(targets) + 1)
        for ax, target in zip(axes, targets):
            _panel(ax, df[df["target"] == target], stats[stats["target"] == target], target, metric_of[target])
        _panel(axes[len(targets)], mean_over_targets(df), stats[stats["target"] == "mean"], MEAN_PANEL, mean_ylabel)
        fig.suptitle(title, fontsize=13)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, frameon=False)
        fig.tight_layout(rect=(0, legend, 1, 1))
        _save(fig, pdf_path, png_path)


def plot_efficiency(df: pd.DataFrame, pdf_path: str | os.PathLike, png_path: str | os.PathLike, title: str) -> None:
    """Sample efficiency: per target, its metric against the % of training data, one line per k (mean over
    draws and seeds, ± std band)."""
    stats = efficiency_summary(df)
    metric_of = df.groupby("target")["metric"].first()
    targets = sorted(metric_of.index)
    counts = sorted(stats["k"].unique())
    colors = plt.get_cmap("viridis")([i / max(len(counts) - 1, 1) for i in range(len(counts))])
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes, legend = _grid(len(targets))
        for ax, target in zip(axes, targets):
            for k, color in zip(counts, colors):
                s = stats[(stats["target"] == target) & (stats["k"] == k)].sort_values("percent")
                ax.plot(s["percent"], s["mean"], "-o", markersize=3, color=color, label=f"k={k}")
                ax.fill_between(s["percent"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                                color=color, alpha=0.12)
            ax.set_title(target)
            ax.set_xlabel("% of the training data")
            ax.set_ylabel(metric_of[target])
            ax.grid(alpha=0.3)
        fig.suptitle(title, fontsize=13)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(counts), 8), frameon=False)
        fig.tight_layout(rect=(0, legend, 1, 1))
        _save(fig, pdf_path, png_path)
