"""The batch sampler: mixing proportions, heterogeneous/homogeneous batches, epochs, determinism, resume."""

import math
from collections import Counter

import numpy as np
import pytest

from prefinetune.sampling import MultiTaskSampler, mixing_probabilities

SIZES = {"a": 600, "b": 300, "c": 100}


# -- mixing_probabilities ------------------------------------------------------------------------------------
def test_natural_proportions():
    p = mixing_probabilities(SIZES)
    assert list(p) == ["a", "b", "c"]
    assert p["a"] == pytest.approx(0.6)
    assert p["b"] == pytest.approx(0.3)
    assert p["c"] == pytest.approx(0.1)
    assert sum(p.values()) == pytest.approx(1.0)


def test_temperature_two_is_square_root():
    sizes = {"a": 400, "b": 100, "c": 25}
    p = mixing_probabilities(sizes, temperature=2.0)
    total = 20 + 10 + 5
    assert p["a"] == pytest.approx(20 / total)
    assert p["b"] == pytest.approx(10 / total)
    assert p["c"] == pytest.approx(5 / total)


def test_high_temperature_approaches_uniform():
    p = mixing_probabilities(SIZES, temperature=1e6)
    for v in p.values():
        assert v == pytest.approx(1 / 3, abs=1e-4)


def test_cap_limits_large_tasks():
    p = mixing_probabilities(SIZES, cap=200)
    # min(n, 200) = 200, 200, 100
    assert p["a"] == pytest.approx(0.4)
    assert p["b"] == pytest.approx(0.4)
    assert p["c"] == pytest.approx(0.2)


def test_cap_and_temperature_combine():
    p = mixing_probabilities({"a": 10_000, "b": 100}, temperature=2.0, cap=400)
    assert p["a"] == pytest.approx(20 / 30)
    assert p["b"] == pytest.approx(10 / 30)


def test_errors():
    with pytest.raises(ValueError, match="no tasks"):
        mixing_probabilities({})
    with pytest.raises(ValueError, match="no training examples"):
        mixing_probabilities({"a": 10, "empty": 0})
    with pytest.raises(ValueError, match="empty"):
        mixing_probabilities({"a": 10, "empty": 0})
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            mixing_probabilities(SIZES, temperature=bad)
    with pytest.raises(ValueError):
        MultiTaskSampler({"a": 0}, batch_size=4, seed=0)


# -- MultiTaskSampler ----------------------------------------------------------------------------------------
def draw(sampler, steps, start=0):
    return [sampler.batch(s) for s in range(start, start + steps)]


def test_heterogeneous_batches_mix_tasks():
    sampler = MultiTaskSampler(SIZES, batch_size=32, seed=0)
    batches = draw(sampler, 50)
    n_tasks = [len({t for t, _ in b}) for b in batches]
    assert all(len(b) == 32 for b in batches)
    assert np.mean(n_tasks) > 2.5  # with p = .6/.3/.1 and 32 rows, nearly every batch has all three
    assert min(n_tasks) >= 2


def test_heterogeneous_frequencies_match_proportions():
    sampler = MultiTaskSampler(SIZES, batch_size=40, seed=3)
    counts = Counter(t for b in draw(sampler, 500) for t, _ in b)  # 20 000 draws
    total = sum(counts.values())
    assert total == 20_000
    for task, p in mixing_probabilities(SIZES).items():
        assert counts[task] / total == pytest.approx(p, abs=0.01)


def test_temperature_frequencies_follow_mixing_rule():
    sampler = MultiTaskSampler(SIZES, batch_size=40, seed=5, temperature=2.0)
    counts = Counter(t for b in draw(sampler, 500) for t, _ in b)
    total = sum(counts.values())
    expected = mixing_probabilities(SIZES, temperature=2.0)
    assert expected["c"] > 0.15  # different from natural (0.1): the check below is meaningful
    for task, p in expected.items():
        assert counts[task] / total == pytest.approx(p, abs=0.01)


def test_homogeneous_batches_have_one_task():
    sampler = MultiTaskSampler(SIZES, batch_size=16, seed=1, homogeneous=True)
    batches = draw(sampler, 3000)
    per_batch = []
    for b in batches:
        tasks = {t for t, _ in b}
        assert len(tasks) == 1
        assert len(b) == 16
        per_batch.append(b[0][0])
    counts = Counter(per_batch)
    for task, p in mixing_probabilities(SIZES).items():
        assert counts[task] / len(batches) == pytest.approx(p, abs=0.03)


@pytest.mark.parametrize("homogeneous", [False, True])
def test_epoch_without_replacement(homogeneous):
    sizes = {"a": 50, "b": 37, "c": 13}
    sampler = MultiTaskSampler(sizes, batch_size=8, seed=11, homogeneous=homogeneous)
    seen = {t: [] for t in sizes}
    for b in draw(sampler, 200):
        for t, i in b:
            seen[t].append(i)
    for t, n in sizes.items():
        indices = seen[t]
        assert len(indices) >= 2 * n, f"{t} was drawn too rarely for the test to be meaningful"
        assert sorted(indices[:n]) == list(range(n))  # first epoch: a permutation
        assert sorted(indices[n:2 * n]) == list(range(n))  # second epoch too
        assert indices[:n] != list(range(n))  # shuffled
        assert indices[:n] != indices[n:2 * n]  # a fresh permutation per epoch


def test_single_task_is_shuffled_finetuning():
    sampler = MultiTaskSampler({"only": 20}, batch_size=5, seed=0)
    batches = draw(sampler, 4)
    flat = [i for b in batches for t, i in b]
    assert all(t == "only" for b in batches for t, _ in b)
    assert sorted(flat) == list(range(20))


def test_deterministic_in_seed():
    a = draw(MultiTaskSampler(SIZES, batch_size=16, seed=7), 20)
    b = draw(MultiTaskSampler(SIZES, batch_size=16, seed=7), 20)
    c = draw(MultiTaskSampler(SIZES, batch_size=16, seed=8), 20)
    assert a == b
    assert a != c


def test_batch_items_are_valid_indices():
    sampler = MultiTaskSampler(SIZES, batch_size=16, seed=2)
    for b in draw(sampler, 100):
        for t, i in b:
            assert isinstance(i, int)
            assert 0 <= i < SIZES[t]


@pytest.mark.parametrize("homogeneous", [False, True])
def test_resume_from_state_dict(homogeneous):
    full = MultiTaskSampler(SIZES, batch_size=16, seed=4, homogeneous=homogeneous)
    expected = draw(full, 120)

    first = MultiTaskSampler(SIZES, batch_size=16, seed=4, homogeneous=homogeneous)
    got = draw(first, 70)
    state = first.state_dict()
    assert set(state["consumed"]) == set(SIZES)
    assert sum(state["consumed"].values()) == 70 * 16

    resumed = MultiTaskSampler(SIZES, batch_size=16, seed=4, homogeneous=homogeneous)
    resumed.load_state_dict(state)
    got += draw(resumed, 50, start=70)
    assert got == expected


def test_resume_without_state_would_differ():
    """Sanity check of the test above: the counters matter, restarting them repeats early examples."""
    full = MultiTaskSampler(SIZES, batch_size=16, seed=4)
    expected = draw(full, 120)[70:]
    fresh = MultiTaskSampler(SIZES, batch_size=16, seed=4)
    assert draw(fresh, 50, start=70) != expected


def test_state_dict_is_a_copy():
    sampler = MultiTaskSampler(SIZES, batch_size=8, seed=0)
    draw(sampler, 3)
    state = sampler.state_dict()
    before = dict(state["consumed"])
    draw(sampler, 3)
    assert state["consumed"] == before


def test_rows_grouped_contiguously_by_task():
    sampler = MultiTaskSampler({"a": 100, "b": 100, "c": 100, "d": 100}, batch_size=32, seed=9)
    for b in draw(sampler, 100):
        tasks = [t for t, _ in b]
        runs = [t for k, t in enumerate(tasks) if k == 0 or tasks[k - 1] != t]
        assert len(runs) == len(set(runs)), f"task rows not contiguous: {tasks}"


def test_probabilities_sum_to_one_many_tasks():
    sizes = {f"t{i}": i * 7 + 1 for i in range(30)}
    p = mixing_probabilities(sizes, temperature=1.5, cap=100)
    assert sum(p.values()) == pytest.approx(1.0)
    assert p["t29"] == pytest.approx(p["t20"])  # both capped at 100
    assert p["t0"] < p["t1"]
    assert math.isclose(p["t1"] / p["t0"], (8 / 1) ** (1 / 1.5))
