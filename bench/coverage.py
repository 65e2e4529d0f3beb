"""Benchmark: how often the critical-point table's intervals hold the truth, by simulation at a study design.

For each truth it simulates ``--studies`` tables in the scaling.csv shape and runs the analysis's own code
(``breakpoint.critical_points``, as ``analysis.critical_table`` does for each target) on each:
  k = 0       the shared model without pre-finetuning: ``--seeds`` runs at 0.70 + run noise (+ one offset of SD
              ``--baseline-sd`` for the whole model, default 0: the k = 0 model is fixed, only its seeds vary)
  k > 0       per draw and seed: 0.70 + the truth's effect at k + the draw's offset (one per draw, shared by
              its models at every k; SD ``--draw-sd``) + run noise (SD ``--noise``) (+ one offset per (k, draw)
              model, SD ``--model-sd``, default 0)
The truths (the effect of pre-finetuning on k tasks, in metric points):
  hinge       -0.003 per task down to k = 15, then +0.002 per task: back at the baseline at k = 37.5
  hinge_mid   -0.002 per task down to k = 22, then +0.004 per task: back at k = 33
  line        +0.001 per task from the baseline: never below it (break-even 0), no breakpoint
  drop_rise   -0.03 at any pre-finetuning, then +0.001 per task: no breakpoint inside the grid, back at k = 30
  flat        no effect
The design (task counts, draws, seeds) is the config's own (``--config``, default config.yaml: task_counts,
draws, finetune_seeds); ``--counts``, ``--draws`` and ``--seeds`` override it.

It prints, per truth: studies; the share identified (a k_c reported); among identified rows, how often the
k_c interval and the break-even interval hold the truth; among all rows with a break-even, how often its
interval holds the truth; the same for slope_line; median interval widths (of the bounded intervals; an
interval whose upper end lies beyond the largest k is unbounded: an empty cell in the table); and the share
of studies with an identified k_c at the grid's edge (at the second or the second-last trained k: a break
that fits as well anywhere in the gap to the first or last). The k_c truth is as the grid can place it: a
true break between the first two trained k counts as at the second (15 is 16 at the config's grid). Shares
come with a 95 % Wilson interval.
Deterministic for ``--seed``.
Run:  python bench/coverage.py [--studies 100] [--bootstrap 500] [--draws 6] [--method resample]
      python bench/coverage.py --smoke     # a few studies, few replicates: checks that it works, in seconds
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from prefinetune import breakpoint

REPO = Path(__file__).resolve().parent.parent
BASELINE = 0.70


@dataclass
class Truth:
    effect: Callable[[np.ndarray], np.ndarray]   # the effect of pre-finetuning on k > 0 tasks
    k_c: float | None                            # the breakpoint (None: none inside the grid)
    break_even: float | None                     # where the curve is back at the baseline (None: not defined)


TRUTHS = {
    "hinge": Truth(lambda k: -0.003 * np.minimum(k, 15) + 0.002 * np.maximum(k - 15, 0), 15.0, 37.5),
    "hinge_mid": Truth(lambda k: -0.002 * np.minimum(k, 22) + 0.004 * np.maximum(k - 22, 0), 22.0, 33.0),
    "line": Truth(lambda k: 0.001 * k, None, 0.0),
    "drop_rise": Truth(lambda k: -0.03 + 0.001 * k, None, 30.0),
    "flat": Truth(lambda k: 0.0 * k, None, None),
}


def design_from_config(path: Path) -> tuple[list[int], int, int]:
    """task_counts, draws and finetune_seeds of a config file."""
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        sys.exit(f"error: {path}: {error}")
    for field in ("task_counts", "draws", "finetune_seeds"):
        if not isinstance(config, dict) or field not in config:
            sys.exit(f"error: {path}: missing field '{field}'")
    return [int(k) for k in config["task_counts"]], int(config["draws"]), int(config["finetune_seeds"])


def simulate(truth: Truth, counts: list[int], draws: int, seeds: int, draw_sd: float, noise: float,
             rng: np.random.Generator, baseline_sd: float = 0.0, model_sd: float = 0.0) -> pd.DataFrame:
    """One study's runs (columns k, draw, seed, value)."""
    trained = np.array([k for k in counts if k > 0], float)
    base = BASELINE + noise * rng.standard_normal(seeds)
    offsets = draw_sd * rng.standard_normal(draws)
    values = (BASELINE + truth.effect(trained)[:, None, None] + offsets[None, :, None]
              + noise * rng.standard_normal((len(trained), draws, seeds)))
    if model_sd:
        values = values + model_sd * rng.standard_normal((len(trained), draws, 1))
    k, d, s = np.meshgrid(trained, np.arange(1, draws + 1), np.arange(1, seeds + 1), indexing="ij")
    rows = pd.DataFrame({"k": k.ravel().astype(int), "draw": d.ravel(), "seed": s.ravel(), "value": values.ravel()})
    if baseline_sd:
        base = base + baseline_sd * rng.standard_normal()
    zero = pd.DataFrame({"k": 0, "draw": 0, "seed": np.arange(1, seeds + 1), "value": base})
    return pd.concat([zero, rows], ignore_index=True)


def wilson(hits: int, n: int) -> str:
    """hits / n as a percentage with its 95 % Wilson interval."""
    if n == 0:
        return "-"
    p, z = hits / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{hits}/{n} = {100 * p:.0f} % ({100 * (centre - half):.0f}-{100 * (centre + half):.0f})"


def covers(table: pd.DataFrame, quantity: str, truth: float) -> pd.Series:
    """Whether each row's interval of ``quantity`` holds ``truth`` (an empty upper bound is infinite)."""
    lo = table[f"{quantity}_lo"]
    hi = table[f"{quantity}_hi"].fillna(np.inf)
    return (lo <= truth + 1e-9) & (truth - 1e-9 <= hi)


def width(table: pd.DataFrame, quantity: str) -> str:
    """Median width of the rows' finite intervals of ``quantity``, and how many have an empty (infinite) bound."""
    if not len(table):
        return "-"
    w = table[f"{quantity}_hi"] - table[f"{quantity}_lo"]
    infinite = int(w.isna().sum())
    median = f"{w.median():.3g}" if infinite < len(table) else "-"
    return median + (f" ({infinite} of {len(table)} unbounded)" if infinite else "")


def summarise(name: str, truth: Truth, table: pd.DataFrame, counts: list[int]) -> dict:
    """One truth's line of the report."""
    trained = [k for k in counts if k > 0]
    n = len(table)
    ident = table[table["status"] == "identified"]
    reported = table[table["break_even"].notna() | table["break_even_lo"].notna()]
    edge = ident[(ident["k_c"] <= trained[1] + 1e-9) | (ident["k_c"] >= trained[-2] - 1e-9)]
    line_truth = np.polyfit(np.array(trained, float), truth.effect(np.array(trained, float)), 1)[0]
    out = {"truth": name, "studies": n, "identified": wilson(len(ident), n),
           "k_c edge": wilson(len(edge), n), "break_even reported": wilson(len(reported), n)}
    if truth.k_c is not None:
        placed = min(max(truth.k_c, trained[1]), trained[-2])
        out["k_c covered (identified)"] = wilson(int(covers(ident, "k_c", placed).sum()), len(ident))
        out["k_c width"] = width(ident, "k_c")
    if truth.break_even is not None:
        with_be = ident[ident["break_even"].notna() | ident["break_even_lo"].notna()]
        out["break_even covered (identified)"] = wilson(int(covers(with_be, "break_even", truth.break_even).sum()),
                                                        len(with_be))
        out["break_even covered (reported)"] = wilson(int(covers(reported, "break_even", truth.break_even).sum()),
                                                      len(reported))
        out["break_even width"] = width(reported, "break_even")
    out["slope_line covered"] = wilson(int(covers(table, "slope_line", line_truth).sum()), n)
    return out


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table, its index as the first column."""
    head = ["", *map(str, table.columns)]
    rows = [[str(i), *map(str, r)] for i, r in zip(table.index, table.to_numpy())]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml", help="design from this config")
    parser.add_argument("--counts", type=int, nargs="+", help="task counts, 0 included (default: the config's)")
    parser.add_argument("--draws", type=int, help="draws (default: the config's)")
    parser.add_argument("--seeds", type=int, help="fine-tuning seeds (default: the config's finetune_seeds)")
    parser.add_argument("--draw-sd", type=float, default=0.006, help="SD of the per-draw offset (default 0.006)")
    parser.add_argument("--baseline-sd", type=float, default=0.0,
                        help="SD of an offset of the whole k = 0 model (default 0)")
    parser.add_argument("--model-sd", type=float, default=0.0,
                        help="SD of an offset of each (k, draw) model (default 0)")
    parser.add_argument("--noise", type=float, default=0.01, help="SD of the per-run noise (default 0.01)")
    parser.add_argument("--studies", type=int, default=100, help="simulated studies per truth (default 100)")
    parser.add_argument("--bootstrap", type=int, default=breakpoint.N_BOOT,
                        help=f"bootstrap replicates per row (default {breakpoint.N_BOOT}, as the analysis)")
    parser.add_argument("--level", type=float, default=breakpoint.LEVEL)
    parser.add_argument("--method", help="interval method of breakpoint.critical_points (default: its default)")
    parser.add_argument("--truths", nargs="+", choices=list(TRUTHS), default=list(TRUTHS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and the bootstrap")
    parser.add_argument("--smoke", action="store_true", help="4 studies per truth, 40 replicates: seconds")
    args = parser.parse_args(argv)
    counts, draws, seeds = design_from_config(args.config)
    counts = sorted(args.counts or counts)
    draws, seeds = args.draws or draws, args.seeds or seeds
    studies, n_boot = (4, 40) if args.smoke else (args.studies, args.bootstrap)
    kwargs = {}
    if args.method:
        if "method" not in inspect.signature(breakpoint.critical_points).parameters:
            sys.exit("error: --method: this version of breakpoint.critical_points has one interval method")
        kwargs["method"] = args.method

    print(f"design: task counts {counts}, {draws} draws, {seeds} seeds; SD of the draw offset {args.draw_sd}, of the "
          f"run noise {args.noise}, of the k = 0 model {args.baseline_sd}, of each (k, draw) model {args.model_sd}; "
          f"{studies} studies per truth, {n_boot} bootstrap replicates, level {args.level}, interval method "
          f"{args.method or 'default'}, seed {args.seed}")
    lines, started = [], time.perf_counter()
    for t, name in enumerate(args.truths):
        truth = TRUTHS[name]
        series = [(name, "value", simulate(truth, counts, draws, seeds, args.draw_sd, args.noise,
                                           np.random.default_rng([args.seed, t, i]), args.baseline_sd, args.model_sd))
                  for i in range(studies)]
        tic = time.perf_counter()
        table = breakpoint.critical_points(series, "bench", n_boot=n_boot, level=args.level, seed=args.seed,
                                           **kwargs)
        lines.append({**summarise(name, truth, table, counts), "seconds": f"{time.perf_counter() - tic:.1f}"})
    print(markdown(pd.DataFrame(lines).set_index("truth").T.fillna("")))
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
