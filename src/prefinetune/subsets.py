"""Nested task subsets for the scaling study.

For each draw the pool is put in a seeded random order; the subset of size k is the first k tasks of that
order, so every larger subset is a superset of the smaller ones (as in the paper). Under the paper's protocol
(``targets_in_pool``) the target tasks come first in every order, so every pre-finetuned model has seen them;
under ``held_out`` they are removed from the pool.
"""

from __future__ import annotations

import numpy as np
import yaml

from .io import write_text

PROTOCOLS = ("targets_in_pool", "held_out")


def task_order(pool: list[str], targets: list[str], protocol: str, seed: int, draw: int) -> list[str]:
    """The order in which tasks enter the subsets of one draw (deterministic in ``seed`` and ``draw``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    rest = [t for t in pool if t not in targets]
    rng = np.random.default_rng([seed, draw])
    shuffled = [rest[i] for i in rng.permutation(len(rest))]
    return list(targets) + shuffled if protocol == "targets_in_pool" else shuffled


def draw_seed(seed: int, draw: int) -> int:
    """The pre-finetuning seed (sampler, heads, dropout) of every model of one draw, from the config's ``seed`` and
    the draw: independent draws, and one seed per draw at every k (common random numbers across k)."""
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def subset(order: list[str], k: int) -> list[str]:
    """The first ``k`` tasks of a draw's order."""
    if k > len(order):
        raise ValueError(f"k = {k} exceeds the {len(order)} tasks available")
    return list(order[:k])


def write_order(path, draw: int, order: list[str], protocol: str, seed: int) -> None:
    """A human-readable record of one draw: the order tasks enter, and how it was made."""
    header = (f"# Draw {draw}: the pre-finetuning subset of size k is the first k tasks below.\n"
              f"# protocol: {protocol} (targets_in_pool puts the targets first), seed: {seed}\n")
    write_text(path, header + yaml.safe_dump({"draw": draw, "protocol": protocol, "seed": seed, "order": order},
                                            sort_keys=False))
