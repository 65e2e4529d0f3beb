"""Pre-finetuning's budget per k (fixed updates, passes over the subset, or until the multi-task validation loss
stops improving), and batch-homogeneous updates (one task per update). The data are test_families' fixtures."""

import math

import pandas as pd
import pytest
import torch

from prefinetune.config import DEFAULT_TRAIN, prefinetune_steps
from prefinetune.data import load_tokenized
from prefinetune.sampling import MultiTaskSampler
from prefinetune.training import pick_device, train, validation_loss
from prefinetune.batching import task_arrays
from test_families import prepared  # noqa: F401  (the module-scoped fixture)
from test_fast_training import SETTINGS, all_data, model_without_dropout


def test_the_budget_sets_the_updates_of_a_run():
    settings = {**DEFAULT_TRAIN, "max_steps": 100, "batch_size": 8, "grad_accum": 2}
    assert prefinetune_steps(settings, 5000) == 100  # updates: max_steps whatever the subset
    passes = {**settings, "budget": "passes", "passes": 1.5}
    assert prefinetune_steps(passes, 1000) == math.ceil(1.5 * 1000 / 16)  # 94: 1.5 passes over 1,000 items
    assert prefinetune_steps(passes, 5000) == 100  # capped by max_steps
    assert prefinetune_steps({**settings, "budget": "convergence"}, 1000) == 100  # at most max_steps


def validation(root, tasks, n=24):
    return {name: load_tokenized(root / "tok" / name, "validation").select(range(n)) for name in tasks}


def run(root, tasks, tmp_path, name, steps, checkpoint_dir=None, **extra):
    settings = {**SETTINGS, "budget": "convergence", "eval_every": 2, "patience": 2, "log_every": 1, **extra}
    model = model_without_dropout(root, tasks)
    summary = train(model, all_data(root, tasks), settings, steps, pad_id=1, log_path=tmp_path / f"{name}.tsv",
                    checkpoint_dir=checkpoint_dir, validation=validation(root, tasks))
    return summary, pd.read_csv(tmp_path / f"{name}.tsv", sep="\t"), model


def test_convergence_stops_after_patience_and_keeps_the_best_weights(prepared, tmp_path):  # noqa: F811
    """A learning rate too high for the task: the validation loss, computed every 2 updates on a fixed slice of
    each task's validation split, stops improving; training stops 2 evaluations after its best, and the model
    it returns is the best one (its validation loss is the best logged)."""
    root, tasks, _ = prepared
    summary, log, model = run(root, tasks, tmp_path, "diverges", steps=40, lr=0.05)
    assert summary["stopped_early"] and summary["steps"] < 40 and summary["steps"] == summary["stopped_after"]
    evaluated = log.dropna(subset=["val_loss"])
    assert list(evaluated.step) == list(range(2, summary["steps"] + 1, 2))  # every eval_every updates, logged
    best = evaluated.val_loss.idxmin()
    assert evaluated.step[best] == summary["best_step"] == summary["steps"] - 2 * 2  # patience 2 evaluations
    assert summary["best_validation_loss"] == pytest.approx(evaluated.val_loss[best], abs=1e-6)
    held = task_arrays(validation(root, tasks), model.tasks)
    assert validation_loss(model, held, 1, 64, pick_device(), "fp32") == pytest.approx(evaluated.val_loss[best], rel=1e-5)


def test_convergence_runs_to_max_steps_while_the_loss_improves_and_resumes_exactly(prepared, tmp_path):  # noqa: F811
    """With a sane learning rate and patience 10 the run takes its 12 updates; stopped after its checkpoint at
    update 10 and resumed, it ends with the same weights, log and best step (the early-stopping state is in
    the checkpoint)."""
    root, tasks, _ = prepared
    checkpoints = tmp_path / "checkpoints"
    full, log_full, m_full = run(root, tasks, tmp_path, "full", 12, checkpoints, patience=10, checkpoint_every=5)
    assert not full["stopped_early"] and full["steps"] == 12
    resumed, log_resumed, m_resumed = run(root, tasks, tmp_path, "resumed", 12, checkpoints, patience=10,
                                          checkpoint_every=5)
    assert resumed["resumed_after"] == 10 and resumed["best_step"] == full["best_step"]
    pd.testing.assert_frame_equal(log_resumed.drop(columns="seconds"), log_full.drop(columns="seconds"))
    for key, value in m_full.state_dict().items():
        assert torch.equal(m_resumed.state_dict()[key], value), key


def test_homogeneous_updates_hold_one_task_in_all_their_micro_batches(prepared, tmp_path):  # noqa: F811
    """batches: homogeneous is the paper's batch-homogeneous baseline: one task per optimizer update, all of its
    grad_accum micro-batches; the tasks still follow their natural proportions over updates."""
    root, tasks, _ = prepared
    settings = {**SETTINGS, "batches": "homogeneous", "grad_accum": 4, "log_every": 1}
    train(model_without_dropout(root, tasks), all_data(root, tasks), settings, 16, pad_id=1,
          log_path=tmp_path / "log.tsv")
    assert (pd.read_csv(tmp_path / "log.tsv", sep="\t").tasks_in_update == 1).all()
    sizes = {"a": 600, "b": 300, "c": 100}
    sampler = MultiTaskSampler(sizes, batch_size=8, seed=3, homogeneous=True)
    firsts = []
    for step in range(1, 1501):
        micro = sampler.update(step, 4)
        assert len(micro) == 4 and len({t for batch in micro for t, _ in batch}) == 1
        firsts.append(micro[0][0][0])
    assert {t: firsts.count(t) / len(firsts) for t in sizes} == pytest.approx({"a": 0.6, "b": 0.3, "c": 0.1}, abs=0.04)
    heterogeneous = MultiTaskSampler(sizes, batch_size=8, seed=3).update(1, 4)
    assert len({t for batch in heterogeneous for t, _ in batch}) > 1
