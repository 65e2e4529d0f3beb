"""Which examples go into each batch of multi-task training.

Muppet trains on *heterogeneous* batches: one optimizer update mixes examples of many tasks, and datasets
keep their natural proportions (no up- or down-sampling). With ``temperature`` and ``cap`` the same sampler
gives the T5/jiant mixing rules, p(task) ∝ min(n, cap) ** (1 / T). ``homogeneous=True`` draws one task per
update instead (every micro-batch of the update from it), the paper's batch-homogeneous baseline, which it
found worse.

Within a task, examples are visited in seeded random epochs (a fresh permutation per pass), so a
single-task sampler is ordinary shuffled fine-tuning. The state is one counter per task, which makes the
sampler cheap to checkpoint and resume.
"""

from __future__ import annotations

import numpy as np


def mixing_probabilities(sizes: dict[str, int], temperature: float = 1.0, cap: int | None = None) -> dict[str, float]:
    """p(task) ∝ min(n, cap) ** (1 / temperature); T = 1 and no cap is examples-proportional (natural) mixing."""
    if not sizes:
        raise ValueError("no tasks to sample from")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = np.array([min(size, cap) if cap else size for size in sizes.values()], dtype=np.float64)
    if (n <= 0).any():
        empty = [t for t, size in sizes.items() if size <= 0]
        raise ValueError(f"tasks with no training examples: {empty}")
    weights = n ** (1.0 / temperature)
    return dict(zip(sizes, weights / weights.sum()))


class MultiTaskSampler:
    """Yields batches as lists of (task, example index); batch ``step`` depends only on the seed and the state."""

    def __init__(self, sizes: dict[str, int], batch_size: int, seed: int, *, temperature: float = 1.0,
                 cap: int | None = None, homogeneous: bool = False):
        self.tasks = list(sizes)
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.homogeneous = homogeneous
        self.probs = np.array(list(mixing_probabilities(sizes, temperature, cap).values()))
        self.consumed = {t: 0 for t in self.tasks}  # examples drawn so far from each task
        self._perm_cache: dict[str, tuple[int, np.ndarray]] = {}

    def _permutation(self, task: str, epoch: int) -> np.ndarray:
        cached = self._perm_cache.get(task)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, self.tasks.index(task), epoch])
            cached = (epoch, rng.permutation(self.sizes[task]))
            self._perm_cache[task] = cached
        return cached[1]

    def _take(self, task: str, count: int) -> list[int]:
        out = []
        n = self.sizes[task]
        for _ in range(count):
            epoch, pos = divmod(self.consumed[task], n)
            out.append(int(self._permutation(task, epoch)[pos]))
            self.consumed[task] += 1
        return out

    def update(self, step: int, micro_batches: int) -> list[list[tuple[str, int]]]:
        """The micro-batches of optimizer update ``step`` (1-based): heterogeneous, each mixes tasks; homogeneous,
        all of them from the one task drawn for the update's first micro-batch."""
        first = (step - 1) * micro_batches
        task = self._task(first) if self.homogeneous else None
        return [self.batch(first + micro, task) for micro in range(micro_batches)]

    def _task(self, index: int) -> int:
        return int(np.random.default_rng([self.seed, 1_000_003, index]).choice(len(self.tasks), p=self.probs))

    def batch(self, index: int, task: int | None = None) -> list[tuple[str, int]]:
        """Micro-batch ``index`` (0-based, over the run): heterogeneous, its tasks drawn in their proportions;
        homogeneous, all from one task (``task``, else drawn for this micro-batch)."""
        if self.homogeneous:
            chosen = np.full(self.batch_size, self._task(index) if task is None else task)
        else:
            chosen = np.random.default_rng([self.seed, 1_000_003, index]).choice(len(self.tasks), size=self.batch_size,
                                                                                   p=self.probs)
        batch = []
        for t_idx in np.unique(chosen):  # group by task: contiguous rows per head
            task = self.tasks[t_idx]
            batch.extend((task, i) for i in self._take(task, int((chosen == t_idx).sum())))
        return batch

    def state_dict(self) -> dict:
        return {"consumed": dict(self.consumed)}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = {t: int(state["consumed"][t]) for t in self.tasks}
