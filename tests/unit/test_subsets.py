"""Nested task subsets: the order tasks enter a draw, and the record written for it."""

import pytest
import yaml

from prefinetune.subsets import PROTOCOLS, subset, task_order, write_order

POOL = [f"p{i:02d}" for i in range(20)]
TARGETS = ["tgt_a", "tgt_b"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("draw", [1, 2, 3, 4])
def test_subsets_are_nested(protocol, draw):
    order = task_order(POOL, TARGETS, protocol, seed=0, draw=draw)
    sizes = range(0, len(order) + 1)
    subsets = [subset(order, k) for k in sizes]
    for k, s in zip(sizes, subsets):
        assert len(s) == k
        assert len(set(s)) == k  # no duplicates
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) < set(large)
        assert large[: len(small)] == small


def test_order_is_a_permutation_of_the_pool():
    order = task_order(POOL, TARGETS, "targets_in_pool", seed=0, draw=1)
    assert sorted(order) == sorted(POOL + TARGETS)
    held = task_order(POOL, TARGETS, "held_out", seed=0, draw=1)
    assert sorted(held) == sorted(POOL)


def test_deterministic_by_seed_and_draw():
    a = task_order(POOL, TARGETS, "targets_in_pool", seed=3, draw=1)
    assert a == task_order(POOL, TARGETS, "targets_in_pool", seed=3, draw=1)
    assert a != task_order(POOL, TARGETS, "targets_in_pool", seed=3, draw=2)
    assert a != task_order(POOL, TARGETS, "targets_in_pool", seed=4, draw=1)
    orders = {tuple(task_order(POOL, TARGETS, "held_out", seed=0, draw=d)) for d in range(1, 6)}
    assert len(orders) == 5


def test_order_does_not_mutate_inputs():
    pool, targets = list(POOL), list(TARGETS)
    task_order(pool, targets, "targets_in_pool", seed=0, draw=1)
    assert pool == POOL and targets == TARGETS


def test_targets_first_under_targets_in_pool():
    for draw in range(1, 6):
        order = task_order(POOL, TARGETS, "targets_in_pool", seed=0, draw=draw)
        assert order[: len(TARGETS)] == TARGETS
        assert subset(order, 2) == TARGETS


def test_targets_in_pool_when_pool_already_contains_them():
    pool = POOL[:5] + TARGETS + POOL[5:]
    order = task_order(pool, TARGETS, "targets_in_pool", seed=0, draw=1)
    assert order[:2] == TARGETS
    assert len(order) == len(pool)  # not duplicated
    assert sorted(order) == sorted(pool)


def test_targets_absent_under_held_out():
    pool = POOL + TARGETS
    for draw in range(1, 6):
        order = task_order(pool, TARGETS, "held_out", seed=0, draw=draw)
        assert not set(order) & set(TARGETS)
        assert len(order) == len(POOL)


def test_k_too_large_is_an_error():
    order = task_order(POOL, TARGETS, "held_out", seed=0, draw=1)
    assert subset(order, len(order)) == order
    with pytest.raises(ValueError, match=str(len(order) + 1)):
        subset(order, len(order) + 1)


def test_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        task_order(POOL, TARGETS, "leave_one_out", seed=0, draw=1)


def test_write_order_round_trips(tmp_path):
    order = task_order(POOL, TARGETS, "targets_in_pool", seed=5, draw=2)
    path = tmp_path / "orders" / "draw_2.yaml"
    write_order(path, 2, order, "targets_in_pool", 5)
    text = path.read_text()
    assert text.startswith("#")  # human-readable header
    data = yaml.safe_load(text)
    assert data["order"] == order
    assert data["draw"] == 2
    assert data["protocol"] == "targets_in_pool"
    assert data["seed"] == 5
    assert [p.name for p in path.parent.iterdir()] == ["draw_2.yaml"]  # no temporary left behind
