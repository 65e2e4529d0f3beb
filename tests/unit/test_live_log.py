"""The live record of a training run (monitor.py): train_log.tsv and TensorBoard events written as training goes,
read back with TensorBoard's own reader, and continued by a resumed run with every step once. The data are
test_families' fixtures (all three families)."""

import math

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prefinetune.batching import collate, task_arrays
from prefinetune.training import TaskLosses, train
from test_families import prepared  # noqa: F401  (the module-scoped fixture)
from test_fast_training import SETTINGS, all_data, model_without_dropout


def scalars(folder) -> dict[str, dict[int, float]]:
    """Every scalar of a live folder as TensorBoard shows it: name -> {step: value}."""
    events = EventAccumulator(str(folder))
    events.Reload()
    out = {}
    for name in events.Tags()["scalars"]:
        steps = [e.step for e in events.Scalars(name)]
        assert len(steps) == len(set(steps)), f"{name}: a step appears twice ({steps})"
        out[name] = {e.step: e.value for e in events.Scalars(name)}
    return out


def run(root, tasks, tmp_path, live, steps=12, checkpoint_dir=None, **extra):
    settings = {**SETTINGS, "checkpoint_every": 5, "log_every": 2, "report_to": ["tensorboard"], **extra}
    summary = train(model_without_dropout(root, tasks), all_data(root, tasks), settings, steps, pad_id=1,
                    log_path=tmp_path / "train_log.tsv", checkpoint_dir=checkpoint_dir, live_dir=live)
    return summary, pd.read_csv(tmp_path / "train_log.tsv", sep="\t")


def test_events_give_the_loss_and_the_live_scalars_at_the_logged_steps(prepared, tmp_path):  # noqa: F811
    root, tasks, _ = prepared
    live = tmp_path / "live"
    _, log = run(root, tasks, tmp_path, live)
    got = scalars(live)
    assert list(log.step) == [2, 4, 6, 8, 10, 12]
    assert got["loss/train"] == pytest.approx(dict(zip(log.step, log.loss)), abs=1e-6)
    assert got["lr"] == pytest.approx(dict(zip(log.step, log.lr)), rel=1e-3)
    for name in ("grad_norm", "tokens_per_s"):
        assert set(got[name]) == set(log.step) and all(v > 0 and math.isfinite(v) for v in got[name].values())
    # per task and per family: every task of the three families, each a mean of scaled losses near 1
    assert {n.split("/")[1] for n in got if n.startswith("loss_task/")} == set(tasks)
    assert {n.split("/")[1] for n in got if n.startswith("loss_family/")} == {t.family for t in tasks.values()}
    assert all(0 < v < 3 for n, values in got.items() if n.startswith("loss_") for v in values.values())
    # the live TSV is the log as it was written, the same rows as the output
    assert (live / "train_log.tsv").read_text() == (tmp_path / "train_log.tsv").read_text()


def test_a_resumed_run_continues_the_record_with_every_step_once(prepared, tmp_path):  # noqa: F811
    """The first attempt logs all 12 updates but its last checkpoint is after update 10 (as a job killed after
    update 12 would leave it); the resumed attempt restores the rows up to update 10 and writes 11 and 12 again:
    the TSV and TensorBoard each hold every logged step once, with the uninterrupted run's values."""
    root, tasks, _ = prepared
    live, checkpoints = tmp_path / "live", tmp_path / "checkpoints"
    _, full = run(root, tasks, tmp_path, live, checkpoint_dir=checkpoints)
    first = scalars(live)["loss/train"]
    assert torch.load(checkpoints / "state.pt", weights_only=False)["step"] == 10
    summary, resumed = run(root, tasks, tmp_path, live, checkpoint_dir=checkpoints)
    assert summary["resumed_after"] == 10
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), full.drop(columns="seconds"))
    live_rows = pd.read_csv(live / "train_log.tsv", sep="\t")
    assert list(live_rows.step) == [2, 4, 6, 8, 10, 12]
    again = scalars(live)["loss/train"]
    assert sorted(again) == [2, 4, 6, 8, 10, 12] and again == pytest.approx(first, abs=1e-6)


def test_no_live_folder_writes_only_the_output(prepared, tmp_path):  # noqa: F811
    root, tasks, _ = prepared
    _, log = run(root, tasks, tmp_path, None, steps=2)
    assert list(log.step) == [2] and sorted(p.name for p in tmp_path.iterdir()) == ["train_log.tsv"]


def test_wandb_records_the_run_offline_and_a_resumed_attempt_continues_it(prepared, tmp_path, monkeypatch):  # noqa: F811
    """report_to: [wandb] with WANDB_MODE=offline: the run is recorded under the live folder, and a resumed
    attempt of the same job continues the same W&B run (one id per job)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root, tasks, _ = prepared
    live, checkpoints = tmp_path / "live", tmp_path / "checkpoints"
    run(root, tasks, tmp_path, live, checkpoint_dir=checkpoints, report_to=["wandb"])
    run(root, tasks, tmp_path, live, checkpoint_dir=checkpoints, report_to=["wandb"])  # resumes after update 10
    runs = sorted((live / "wandb").glob("offline-run-*"))  # offline-run-<date>_<time>-<run id>
    ids = {r.name.split("-", 3)[3] for r in runs}
    assert len(runs) == 2 and len(ids) == 1  # one run id, two attempts
    for attempt in runs:
        assert (attempt / f"run-{attempt.name.split('-', 3)[3]}.wandb").stat().st_size > 0
    assert not list(live.glob("events.out.tfevents*"))  # TensorBoard only where asked for


def test_the_window_sums_each_tasks_example_losses_once_read(prepared):  # noqa: F811
    """TaskLosses keeps a forward pass's example losses as they are (no kernel per micro-batch) and sums them per
    task when the window is read: the same sums as adding the examples up by hand; an update redone after running
    out of memory starts the window again. A mixed forward pass hands over every example's loss, task by task,
    and their mean is the pass's loss."""
    window = TaskLosses(["b", "a"])
    window.add((torch.tensor([1.0, 2.0, 3.0]), [("a", 2), ("b", 1)]))
    window.add((torch.tensor([4.0]), [("b", 1)]))
    window.add(None)  # a pass without labels
    assert window.take() == ([3.0, 7.0], [2.0, 2.0])  # names sorted: a, b
    assert window.take() == ([0.0, 0.0], [0.0, 0.0])
    window.add((torch.tensor([5.0]), [("a", 1)]))
    window.clear()
    assert window.take() == ([0.0, 0.0], [0.0, 0.0])

    root, tasks, _ = prepared
    data = all_data(root, tasks)
    model = model_without_dropout(root, tasks)
    batch = [(name, i) for name in tasks for i in range(3)]
    loss, _ = model(**collate(task_arrays(data, tasks), batch, pad_id=1))
    losses, counts = model.pass_losses
    assert counts == [(name, 3) for name in tasks] and not losses.requires_grad
    assert losses.mean().item() == pytest.approx(loss.item())
