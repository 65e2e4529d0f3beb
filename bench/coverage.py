"""Benchmark: how often the analysis's answers hold the truth, by simulation at the config's design.

Each simulated study is a table in the scaling.csv shape, as the config's design produces it:
  subsets    each draw is a random order of the pool (``subsets.task_order``, a new seed per study; under
             targets_in_pool the targets come first), the subset of size k its first k tasks: nested subsets
  k = 0      the model without pre-finetuning: ``--seeds`` runs at 0.70 + run noise
  k > 0      per draw and seed: 0.70 + the truth's effect of pre-finetuning at k + the summed effects of the
             subset's pool tasks + run noise. Each pool task has an effect on the target (SD ``--task-sd``),
             centred over the pool: over random orders they add nothing on average, so the truth is the curve
             averaged over draws, and where a subset holds the whole pool they add exactly nothing. So the draws'
             deviations change with k, are shared along a draw's nested subsets, and vanish at the largest k.
             Options add an offset per draw (``--draw-sd``) and per (k, draw) model (``--model-sd``).
  run noise  Student t with 3 degrees of freedom scaled to SD ``--noise``: heavy-tailed, as seeds are
  failures   each run (k = 0 included) fails with probability ``--failed``: it scores the target's chance level,
             0.53 (RTE's majority class), and its training loss does not fall; the rule of ``failed_runs.py``
             reads the same fields a fine-tuning job records and marks it (``--unmarked``: the loss of a failed
             run falls all the same, so the rule does not mark it and the fits average it in)
The design (task counts, draws, seeds, the pool, the targets, the protocol) is the config's (``--config``,
default config.yaml); ``--counts``, ``--draws`` and ``--seeds`` override it.

The critical point (default). Truths, the effect of pre-finetuning on k tasks in metric points:
  hinge       -0.003 per task down to k = 15, then +0.002 per task: back at the baseline at k = 37.5
  hinge_13    -0.003 per task down to k = 13, then +0.002 per task: back at k = 32.5 (a break between 10 and 16)
  hinge_mid   -0.002 per task down to k = 22, then +0.004 per task: back at k = 33 (a break on a task count)
  line        +0.001 per task from the baseline: never below it (break-even 0), no breakpoint
  drop_rise   -0.03 at any pre-finetuning, then +0.001 per task: no breakpoint, back at k = 30
  flat        no effect (the task effects only)
It runs the analysis's own code (``breakpoint.critical_points``) on every study and prints, per truth and
failure rate: the share identified (a k_c reported); among identified rows, how often the k_c and break-even
intervals hold the truth; among all rows with a break-even, how often its interval holds the truth; the same for
slope_line; median interval widths (of bounded intervals); the share with an identified k_c at the grid's edge;
then the goals, met or not. Shares come with a 95 % Wilson interval.

The transfer map (``--map``): studies with the config's targets, each with its own task effects, through the
analysis's ``analysis.transfer_map`` (the standardised mean included). Two scenarios: no task effects at all,
and 3 tasks per target with an effect of +-``--map-effect`` (the others 0). It prints the share of zero-effect
cells with p < 0.10 (an unadjusted 90 % interval excluding 0) and starred (q <= 0.10), the share of studies with
any zero-effect cell starred, the false discovery proportion averaged over studies, and the share of effects
found. ``--power`` prints the power table instead: per number of draws and effect size, the share of studies in
which one task's effect on one target (one per target, the other tasks 0) is starred.

Deterministic for ``--seed``.
Run:  python bench/coverage.py [--studies 1000] [--failed 0 0.03] [--truths hinge_13 hinge_mid]
      python bench/coverage.py --map [--studies 400]
      python bench/coverage.py --power [--power-draws 3 6 12 24] [--power-effects 0.01 0.02 0.04]
      python bench/coverage.py --smoke     # a few studies of each, few replicates: checks that it works, in seconds
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from prefinetune import breakpoint, failed_runs
from prefinetune.analysis import transfer_map
from prefinetune.subsets import task_order

REPO = Path(__file__).resolve().parent.parent
BASELINE = 0.70
CHANCE = 0.53        # the chance score of a failed run (RTE's majority class)
LOSS_START = 0.69    # a binary target's training loss at the start (log 2)


@dataclass
class Truth:
    effect: Callable[[np.ndarray], np.ndarray]   # the effect of pre-finetuning on k > 0 tasks
    k_c: float | None                            # the breakpoint (None: none inside the grid)
    break_even: float | None                     # where the curve is back at the baseline (None: not defined)


TRUTHS = {
    "hinge": Truth(lambda k: -0.003 * np.minimum(k, 15) + 0.002 * np.maximum(k - 15, 0), 15.0, 37.5),
    "hinge_13": Truth(lambda k: -0.003 * np.minimum(k, 13) + 0.002 * np.maximum(k - 13, 0), 13.0, 32.5),
    "hinge_mid": Truth(lambda k: -0.002 * np.minimum(k, 22) + 0.004 * np.maximum(k - 22, 0), 22.0, 33.0),
    "line": Truth(lambda k: 0.001 * k, None, 0.0),
    "drop_rise": Truth(lambda k: -0.03 + 0.001 * k, None, 30.0),
    "flat": Truth(lambda k: 0.0 * k, None, None),
}
# the goals at the config's design: (truth, what, bound)
GOALS = [(t, what, 0.80 if what == "identified" else 0.85) for t in ("hinge_mid", "hinge_13")
         for what in ("identified", "k_c covered", "break_even covered")]
GOALS += [("line", "identified", -0.10), ("flat", "identified", -0.10)]  # negative: at most


@dataclass
class Design:
    counts: list[int]     # task counts, 0 included
    draws: int
    seeds: int
    pool: list[str]
    targets: list[str]
    protocol: str


@dataclass
class Noise:
    task_sd: float = 0.002    # SD of a pool task's effect on a target
    noise: float = 0.01       # SD of the run noise (Student t, 3 df)
    draw_sd: float = 0.0      # SD of an offset per draw
    model_sd: float = 0.0     # SD of an offset per (k, draw) model
    failed: float = 0.0       # probability that a run fails
    unmarked: bool = False    # failed runs whose loss falls all the same: the rule does not mark them


def design_from_config(path: Path) -> Design:
    """The design of a config file: task_counts, draws, finetune_seeds, pool, targets, protocol."""
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        sys.exit(f"error: {path}: {error}")
    for field in ("task_counts", "draws", "finetune_seeds", "pool", "targets"):
        if not isinstance(config, dict) or field not in config:
            sys.exit(f"error: {path}: missing field '{field}'")
    return Design([int(k) for k in config["task_counts"]], int(config["draws"]), int(config["finetune_seeds"]),
                  list(config["pool"]), list(config["targets"]), config.get("protocol", "targets_in_pool"))


def simulate(design: Design, curve: Callable, effects: np.ndarray, noise: Noise, seed: list[int],
             ) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """One study: runs of every target (columns target, metric, k, draw, seed, value, the failed-run fields and
    failed) and the draws' task orders. ``effects`` (targets, pool tasks outside the targets): each task's effect."""
    rng = np.random.default_rng(seed)
    orders = {d: task_order(design.pool, design.targets, design.protocol, int(rng.integers(2 ** 31)), d)
              for d in range(1, design.draws + 1)}
    rest = [t for t in design.pool if t not in design.targets]
    trained = np.array([k for k in design.counts if k > 0], float)
    inside = np.array([[[t in orders[d][:int(k)] for t in rest] for d in orders] for k in trained], float)
    K, D, S, T = len(trained), design.draws, design.seeds, len(effects)
    e = effects - effects.mean(-1, keepdims=True)  # over random orders they add 0; the whole pool adds 0
    tasks = np.einsum("kdp,tp->tkd", inside, e)
    draw = noise.draw_sd * rng.standard_normal((T, 1, D))
    model = noise.model_sd * rng.standard_normal((T, K, D))
    values = BASELINE + curve(trained)[None, :, None] + tasks + draw + model
    runs = values[..., None] + noise.noise * rng.standard_t(3, (T, K, D, S)) / math.sqrt(3)
    base = BASELINE + noise.noise * rng.standard_t(3, (T, S)) / math.sqrt(3)
    t, k, d, s = np.meshgrid(np.arange(T), trained.astype(int), np.arange(1, D + 1), np.arange(1, S + 1), indexing="ij")
    t0, s0 = np.meshgrid(np.arange(T), np.arange(1, S + 1), indexing="ij")
    df = pd.DataFrame({"target": np.r_[t0.ravel(), t.ravel()], "k": np.r_[np.zeros(T * S, int), k.ravel()],
                       "draw": np.r_[np.zeros(T * S, int), d.ravel()], "seed": np.r_[s0.ravel(), s.ravel()],
                       "value": np.r_[base.ravel(), runs.ravel()]})
    fails = rng.random(len(df)) < noise.failed
    start = LOSS_START * (1 + 0.02 * rng.standard_normal(len(df)))
    df["value"] = np.where(fails, CHANCE, df["value"])
    df["chance"], df["loss_start"] = CHANCE, start
    flat = fails & (not noise.unmarked)
    df["loss_end"] = start * np.where(flat, rng.uniform(0.97, 1.02, len(df)), rng.uniform(0.05, 0.5, len(df)))
    df["failed"] = failed_runs.failed(df)
    df["target"] = [f"target{i}" for i in df["target"]]
    return df.assign(metric="accuracy"), orders


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


def summarise(truth: Truth, table: pd.DataFrame, counts: list[int]) -> tuple[dict, dict]:
    """One truth's column of the report, and its shares for the goals."""
    trained = [k for k in counts if k > 0]
    n = len(table)
    ident = table[table["status"] == "identified"]
    reported = table[table["break_even"].notna() | table["break_even_lo"].notna()]
    edge = ident[(ident["k_c"] <= trained[1] + 1e-9) | (ident["k_c"] >= trained[-2] - 1e-9)]
    line_truth = np.polyfit(np.array(trained, float), truth.effect(np.array(trained, float)), 1)[0]
    out = {"studies": n, "identified": wilson(len(ident), n), "k_c edge": wilson(len(edge), n),
           "break_even reported": wilson(len(reported), n), "failed runs left out": int(table["n_failed"].sum())}
    shares = {"identified": len(ident) / max(n, 1)}
    if truth.k_c is not None:
        hits = int(covers(ident, "k_c", truth.k_c).sum())
        out["k_c covered (identified)"] = wilson(hits, len(ident))
        out["k_c width"] = width(ident, "k_c")
        shares["k_c covered"] = hits / max(len(ident), 1)
    if truth.break_even is not None:
        with_be = ident[ident["break_even"].notna() | ident["break_even_lo"].notna()]
        hits = int(covers(ident, "break_even", truth.break_even).sum())  # not reported: not held
        out["break_even covered (identified)"] = wilson(hits, len(ident))
        out["break_even reported (identified)"] = wilson(len(with_be), len(ident))
        out["break_even covered (reported)"] = wilson(int(covers(reported, "break_even", truth.break_even).sum()),
                                                      len(reported))
        out["break_even width"] = width(reported, "break_even")
        shares["break_even covered"] = hits / max(len(ident), 1)
    out["slope_line covered"] = wilson(int(covers(table, "slope_line", line_truth).sum()), n)
    return out, shares


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table, its index as the first column."""
    head = ["", *map(str, table.columns)]
    rows = [[str(i), *map(str, r)] for i, r in zip(table.index, table.to_numpy())]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows])


def critical_point(args, design: Design, noise: Noise, n_boot: int, kwargs: dict) -> None:
    """The critical point's report: per failure rate, a column per truth, then the goals."""
    pool = [t for t in design.pool if t not in design.targets]
    for rate in args.failed:
        lines, shares, started = {}, {}, time.perf_counter()
        for t, name in enumerate(args.truths):
            truth = TRUTHS[name]
            series = []
            for i in range(args.studies):  # the same studies at every failure rate: only the failures differ
                rng = np.random.default_rng([args.seed, t, i])
                effects = noise.task_sd * rng.standard_normal((1, len(pool)))
                runs, _ = simulate(design, truth.effect, effects, replace(noise, failed=rate), [args.seed, t, i, 1])
                series.append((name, "value", runs))
            tic = time.perf_counter()
            table = breakpoint.critical_points(series, "bench", n_boot=n_boot, level=args.level, seed=args.seed,
                                               **kwargs)
            lines[name], shares[name] = summarise(truth, table, design.counts)
            lines[name]["seconds"] = f"{time.perf_counter() - tic:.1f}"
        print(f"\n### {100 * rate:g} % of runs failed ({time.perf_counter() - started:.0f} s)\n")
        print(markdown(pd.DataFrame(lines).fillna("")))
        goals = [(t, what, bound) for t, what, bound in GOALS if t in shares and what in shares[t]]
        if goals:
            print("\ngoals: " + "; ".join(
                f"{t} {what} {100 * shares[t][what]:.0f} % ({'>=' if bound > 0 else '<='} {100 * abs(bound):.0f}: "
                f"{'met' if (shares[t][what] >= bound if bound > 0 else shares[t][what] <= -bound) else 'NOT met'})"
                for t, what, bound in goals))


def map_study(design: Design, noise: Noise, effects: np.ndarray, seed: list[int], n_boot: int, level: float):
    """One study's transfer table and the true effect of each of its (target, task) cells."""
    runs, orders = simulate(design, TRUTHS["flat"].effect, effects, noise, seed)
    table = transfer_map(runs, orders, "bench", n_boot=n_boot, level=level, seed=seed[-1])
    pool = [t for t in design.pool if t not in design.targets]
    truth = {(f"target{i}", task): effects[i, j] for i in range(len(effects)) for j, task in enumerate(pool)}
    truth.update({("mean", task): np.abs(effects[:, j]).max() for j, task in enumerate(pool)})
    table["truth"] = [truth.get((g, t), 0.0) for g, t in zip(table["target"], table["task"])]
    return table


def planted(rng: np.random.Generator, targets: int, pool: int, per_target: int, size: float) -> np.ndarray:
    """Task effects: ``per_target`` tasks per target with an effect of +-``size``, the others 0."""
    effects = np.zeros((targets, pool))
    for i in range(targets):
        effects[i, rng.choice(pool, per_target, replace=False)] = size * rng.choice([-1.0, 1.0], per_target)
    return effects


def transfer_report(args, design: Design, noise: Noise, n_boot: int) -> None:
    """The transfer map's false positives and discoveries at the design, with and without task effects."""
    pool = [t for t in design.pool if t not in design.targets]
    lines = {}
    for name, per_target in (("no task effects", 0), (f"3 tasks per target at +-{args.map_effect}", 3)):
        rows, tic = [], time.perf_counter()
        for i in range(args.studies):
            rng = np.random.default_rng([args.seed, 7, per_target, i])
            effects = planted(rng, len(design.targets), len(pool), per_target, args.map_effect)
            table = map_study(design, replace(noise, task_sd=0.0), effects, [args.seed, 8, per_target, i], n_boot,
                              args.level)
            ident = table[table["identified"]]
            null, real = ident[ident["truth"] == 0], table[table["truth"] != 0]
            rows.append({"cells": len(ident), "null": len(null), "null_p": int((null["p_value"] < 0.10).sum()),
                         "null_star": int(null["starred"].sum()), "stars": int(ident["starred"].sum()),
                         "real": len(real), "found": int(real["starred"].sum())})
        r = pd.DataFrame(rows)
        lines[name] = {
            "studies": len(r), "identified cells per study (median)": f"{r['cells'].median():.0f}",
            "zero-effect cells with p < 0.10": wilson(int(r["null_p"].sum()), int(r["null"].sum())),
            "zero-effect cells starred (q <= 0.10)": wilson(int(r["null_star"].sum()), int(r["null"].sum())),
            "studies starring a zero-effect cell": wilson(int((r["null_star"] > 0).sum()), len(r)),
            "false discovery proportion (mean over studies)":
                f"{100 * (r['null_star'] / r['stars'].clip(lower=1)).mean():.1f} %",
            "effects starred (of all planted cells)": wilson(int(r["found"].sum()), int(r["real"].sum())),
            "seconds": f"{time.perf_counter() - tic:.0f}"}
    print(f"\n### transfer map: {args.studies} studies per scenario\n")
    print(markdown(pd.DataFrame(lines).fillna("")))


def power_report(args, design: Design, noise: Noise, n_boot: int) -> None:
    """Per number of draws and effect size: the share of planted effects (one task per target) that are starred."""
    pool = [t for t in design.pool if t not in design.targets]
    lines, started = {}, time.perf_counter()
    for size in args.power_effects:
        line = {}
        for draws in args.power_draws:
            found = total = 0
            for i in range(args.studies):
                rng = np.random.default_rng([args.seed, 9, draws, i])
                effects = planted(rng, len(design.targets), len(pool), 1, size)
                table = map_study(replace(design, draws=draws), replace(noise, task_sd=0.0), effects,
                                  [args.seed, 10, draws, i], n_boot, args.level)
                real = table[table["truth"] != 0]
                real = real[real["target"] != "mean"]
                found, total = found + int(real["starred"].sum()), total + len(real)
            line[f"{draws} draws"] = f"{100 * found / max(total, 1):.0f} %"
        lines[f"effect {size:g}"] = line
    print(f"\n### power: share of planted effects starred ({args.studies} studies per cell, "
          f"{time.perf_counter() - started:.0f} s)\n")
    print(markdown(pd.DataFrame(lines).T))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml", help="design from this config")
    parser.add_argument("--counts", type=int, nargs="+", help="task counts, 0 included (default: the config's)")
    parser.add_argument("--draws", type=int, help="draws (default: the config's)")
    parser.add_argument("--seeds", type=int, help="fine-tuning seeds (default: the config's finetune_seeds)")
    parser.add_argument("--task-sd", type=float, default=Noise.task_sd,
                        help=f"SD of a pool task's effect on the target (default {Noise.task_sd})")
    parser.add_argument("--noise", type=float, default=Noise.noise,
                        help=f"SD of the run noise, Student t with 3 df (default {Noise.noise})")
    parser.add_argument("--draw-sd", type=float, default=0.0, help="SD of an offset per draw (default 0)")
    parser.add_argument("--model-sd", type=float, default=0.0, help="SD of an offset per (k, draw) model (default 0)")
    parser.add_argument("--failed", type=float, nargs="+", default=[0.0, 0.03],
                        help="shares of failed runs, one report each (default 0 0.03)")
    parser.add_argument("--unmarked", action="store_true", help="failed runs that the rule does not mark")
    parser.add_argument("--studies", type=int, default=100, help="simulated studies per truth (default 100)")
    parser.add_argument("--bootstrap", type=int, default=breakpoint.N_BOOT,
                        help=f"bootstrap replicates per row (default {breakpoint.N_BOOT}, as the analysis)")
    parser.add_argument("--level", type=float, default=breakpoint.LEVEL)
    parser.add_argument("--method", help="interval method of breakpoint.critical_points (default: its default)")
    parser.add_argument("--truths", nargs="+", choices=list(TRUTHS), default=list(TRUTHS))
    parser.add_argument("--map", action="store_true", help="the transfer map's false positives instead")
    parser.add_argument("--map-effect", type=float, default=0.02, help="planted effect size of --map (default 0.02)")
    parser.add_argument("--power", action="store_true", help="the transfer map's power table instead")
    parser.add_argument("--power-draws", type=int, nargs="+", default=[3, 6, 12, 24])
    parser.add_argument("--power-effects", type=float, nargs="+", default=[0.01, 0.02, 0.04])
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and the bootstrap")
    parser.add_argument("--smoke", action="store_true", help="a few studies of each report, few replicates: seconds")
    args = parser.parse_args(argv)
    design = design_from_config(args.config)
    design = replace(design, counts=sorted(args.counts or design.counts), draws=args.draws or design.draws,
                     seeds=args.seeds or design.seeds)
    noise = Noise(args.task_sd, args.noise, args.draw_sd, args.model_sd, unmarked=args.unmarked)
    n_boot = args.bootstrap
    if args.smoke:
        args.studies, n_boot, args.truths = 3, 40, ["hinge_13", "flat"]
        args.power_draws, args.power_effects = [3, 6], [0.04]
    kwargs = {}
    if args.method:
        if "method" not in inspect.signature(breakpoint.critical_points).parameters:
            sys.exit("error: --method: this version of breakpoint.critical_points has one interval method")
        kwargs["method"] = args.method

    print(f"design: task counts {design.counts}, {design.draws} draws, {design.seeds} seeds, "
          f"{len([t for t in design.pool if t not in design.targets])} pool tasks in random order "
          f"({design.protocol}); task effect SD {noise.task_sd}, run noise SD {noise.noise} (t, 3 df), draw offset SD "
          f"{noise.draw_sd}, model offset SD {noise.model_sd}{', failed runs unmarked' if noise.unmarked else ''}; "
          f"{args.studies} studies, {n_boot} replicates, level "
          f"{args.level}, interval method {args.method or 'default'}, seed {args.seed}")
    started = time.perf_counter()
    if args.map or args.smoke:
        transfer_report(args, design, noise, n_boot)
    if args.power or args.smoke:
        power_report(args, design, noise, n_boot)
    if not (args.map or args.power) or args.smoke:
        critical_point(args, design, noise, n_boot, kwargs)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
