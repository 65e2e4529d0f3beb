"""The task generator's design (prefinetune.synthetic), on which the controls' known answers rest: a task's label
is a function of the dimensions it reads and of no other, classes are balanced, the world's dimensions are
orthogonal over its vocabulary, everything is deterministic; and the controls' registries keep their promise."""

import numpy as np
import pytest
import yaml

from prefinetune.synthetic import DEFAULT_WORLD, generate, generate_split, vocabulary
from workflow_helpers import REPO

WORLD = {"seed": 3, "dims": 6, "words": 40}


def latents_of(sentences, world):
    """Each sentence's latent, recomputed from the world's word vectors: the sum over sqrt(length)."""
    words, vectors = vocabulary(world)
    index = {w: i for i, w in enumerate(words)}
    return np.stack([vectors[[index[w] for w in s.split()]].sum(axis=0) / np.sqrt(len(s.split())) for s in sentences])


def test_a_label_is_a_function_of_the_dimensions_it_reads_only():
    cols = generate_split(5, 0, 2000, pair=False, task_type="classification", num_labels=2, world=WORLD, reads=[2],
                          noise=0.0)
    z, labels = latents_of(cols["sentence"], WORLD), np.array(cols["label"])
    # a threshold on dimension 2 separates the classes exactly
    assert z[labels == 1, 2].min() > z[labels == 0, 2].max()
    # and the other dimensions tell nothing about the label
    others = [d for d in range(WORLD["dims"]) if d != 2]
    assert max(abs(np.corrcoef(z[:, d], labels)[0, 1]) for d in others) < 0.1

    # a label reading several dimensions depends on their sum
    cols = generate_split(6, 0, 2000, pair=False, task_type="classification", num_labels=2, world=WORLD,
                          reads=[0, 1, 2], noise=0.0)
    z, labels = latents_of(cols["sentence"], WORLD), np.array(cols["label"])
    score = z[:, :3].sum(axis=1)
    assert score[labels == 1].min() > score[labels == 0].max()
    assert max(abs(np.corrcoef(z[:, d], labels)[0, 1]) for d in (3, 4, 5)) < 0.1


def test_the_dimensions_are_centred_and_orthogonal_over_the_vocabulary():
    for world in (WORLD, DEFAULT_WORLD, {"seed": 1, "dims": 16, "words": 60}):
        _, vectors = vocabulary(world)
        assert vectors.shape == (world["words"], world["dims"])
        assert np.allclose(vectors.mean(axis=0), 0.0)
        assert np.allclose(vectors.T @ vectors / world["words"], np.eye(world["dims"]))


@pytest.mark.parametrize("pair,num_labels,reads", [(False, 2, None), (True, 2, [0, 1, 2, 3, 4, 5]), (False, 3, [1]),
                                                   (True, 4, None)])
def test_classes_are_balanced(pair, num_labels, reads):
    cols = generate_split(11, 0, 3000, pair=pair, task_type="classification", num_labels=num_labels, world=WORLD,
                          reads=reads)
    shares = np.bincount(cols["label"], minlength=num_labels) / 3000
    assert np.abs(shares - 1 / num_labels).max() < 0.04, shares


def test_generation_is_deterministic_and_splits_differ():
    spec = {"seed": 4, "world": WORLD, "reads": [1], "pair": True, "train": 50, "validation": 20}
    a, b = generate(spec, "classification", 2), generate(spec, "classification", 2)
    for split in ("train", "validation"):
        assert a[split].to_dict() == b[split].to_dict()
    assert a["train"]["sentence1"][:20] != a["validation"]["sentence1"]
    other = generate({**spec, "world": {**WORLD, "seed": 4}}, "classification", 2)
    assert other["train"]["sentence1"] != a["train"]["sentence1"]  # another world, other words


def test_reads_outside_the_world_is_an_error():
    with pytest.raises(ValueError, match="outside the world"):
        generate_split(1, 0, 5, pair=False, task_type="classification", num_labels=2, world=WORLD, reads=[6])


def test_the_controls_pools_read_what_the_target_needs_or_nothing_of_it():
    registry = yaml.safe_load((REPO / "demo/controls/tasks.yaml").read_text())
    reads = {name: set(entry["source"]["generator"]["reads"]) for name, entry in registry.items()}
    worlds = {str(entry["source"]["generator"]["world"]) for entry in registry.values()}
    assert len(worlds) == 1  # one world: the same words and vectors everywhere
    configs = {c: yaml.safe_load((REPO / f"demo/controls/{c}/config.yaml").read_text()) for c in ("positive", "negative")}
    for control, config in configs.items():
        (target,) = config["targets"]
        pool = set().union(*(reads[t] for t in config["pool"]))
        assert all(len(reads[t]) == 1 for t in config["pool"])  # each pool task: one dimension of its own
        assert len(pool) == len(config["pool"])
        if control == "positive":
            assert pool == reads[target]  # k tasks teach k of the target's dimensions
        else:
            assert not pool & reads[target]  # nothing the target reads
    assert configs["positive"]["targets"] == configs["negative"]["targets"]
