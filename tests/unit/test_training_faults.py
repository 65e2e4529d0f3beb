"""Faults of a training job, injected for real in this process on conftest's tiny generated tasks: damaged
checkpoints, a loss driven to infinity, running out of memory (a raised ``torch.OutOfMemoryError``: the CPU cannot
run out of GPU memory), a stop signal during the final save, non-finite outputs and metrics. The same faults in
separate processes (SIGKILL, RLIMIT_FSIZE): tests/workflow/test_fault_injection.py; what each shows:
docs/reliability.md."""

from __future__ import annotations

import json
import os
import re
import signal

import pandas as pd
import pytest
import torch

from prefinetune import checkpoint
from prefinetune.analysis import collect
from prefinetune.config import DEFAULT_TRAIN
from prefinetune.evaluation import evaluate
from prefinetune.faults import Fault
from prefinetune.heads import MultiTaskModel
from prefinetune.io import aside, atomic_path
from prefinetune.data import load_tokenized
from prefinetune.stages import finetune, prefinetune
from prefinetune.training import load_encoder, train
from prefinetune.workflow import holding

SETTINGS = {**DEFAULT_TRAIN, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0, "dropout": 0.0, "log_every": 1,
            "checkpoint_every": 3, "report_to": []}


def model_of(generated, seed=0):
    """The tiny model with heads for the three tasks, without dropout (the encoder's too)."""
    tasks, _, model_dir = generated
    torch.manual_seed(seed)
    model = MultiTaskModel(load_encoder(model_dir), tasks, dropout=0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def task(generated, name):
    return next(t for t in generated[0] if t.name == name)


def run(generated, tmp_path, name, steps=6, checkpoint_dir=None, finish=None, model=None, **extra):
    """train() on all three tasks; returns (what it returned, the model)."""
    tasks, tokenized, _ = generated
    model = model or model_of(generated)
    data = {t.name: load_tokenized(tokenized[t.name], "train") for t in tasks}
    out = train(model, data, {**SETTINGS, **extra}, steps, pad_id=1, log_path=tmp_path / f"{name}.tsv",
                checkpoint_dir=checkpoint_dir, finish=finish)
    return out, model


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


class RunsCode:
    """Unpickling this runs a shell command: what a malicious state.pt would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


DAMAGE = {
    "truncated": (lambda good, tmp: good[:1000], "it cannot be read"),
    "empty": (lambda good, tmp: b"", "it cannot be read"),
    "random": (lambda good, tmp: os.urandom(len(good)), "it cannot be read"),
    "runs code": (lambda good, tmp: pickled({"step": RunsCode(tmp / "ran")}, tmp),
                  "it holds a posix.system object, which loading would run"),
}


def pickled(obj, tmp) -> bytes:
    torch.save(obj, tmp / "evil.pt")
    return (tmp / "evil.pt").read_bytes()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_set_aside_and_the_run_starts_over(generated, tmp_path, capsys, damage):
    """state.pt cut to 1,000 bytes, emptied, overwritten with random bytes, or holding a pickle that would run a
    command: the run sets it aside as state.pt.bad with one line, starts over and ends as a fresh run does; the
    command never runs."""
    checkpoints = tmp_path / "checkpoints"
    first, model = run(generated, tmp_path, "first", checkpoint_dir=checkpoints)  # leaves state.pt at update 3
    make, why = DAMAGE[damage]
    broken = make((checkpoints / checkpoint.STATE).read_bytes(), tmp_path)
    (checkpoints / checkpoint.STATE).write_bytes(broken)
    capsys.readouterr()
    again, model_again = run(generated, tmp_path, "again", checkpoint_dir=checkpoints)
    lines = [line for line in capsys.readouterr().err.splitlines() if "state.pt" in line]
    assert lines[0].startswith(f"setting checkpoint {checkpoints / 'state.pt'} aside as state.pt.bad, starting over: "
                               f"{why}"), lines
    assert again["resumed_after"] == 0 and same_weights(model, model_again)
    assert (checkpoints / "state.pt.bad").read_bytes() == broken  # kept for inspection
    assert not (tmp_path / "ran").exists()


def test_a_checkpoint_that_does_not_fit_the_model_is_set_aside(generated, tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    run(generated, tmp_path, "first", checkpoint_dir=checkpoints)
    saved = torch.load(checkpoints / checkpoint.STATE, weights_only=True)
    name = next(iter(saved["model"]))
    saved["model"][name] = saved["model"][name][:1]
    torch.save(saved, checkpoints / checkpoint.STATE)
    again, _ = run(generated, tmp_path, "again", checkpoint_dir=checkpoints)
    assert f"starting over: its {name} has another shape than this model's" in capsys.readouterr().err
    assert again["resumed_after"] == 0 and (checkpoints / "state.pt.bad").exists()


def test_a_checkpoint_folder_caught_mid_removal_comes_back_and_temporaries_go(generated, tmp_path):
    """A kill during the removal of a run's checkpoint folder (renamed aside, being deleted) and during a save (a
    temporary beside state.pt): the next attempt, whose job first marks its checkpoint folder as its own
    (workflow.holding makes it anew), resumes from the checkpoint of the aside folder and deletes the rest."""
    checkpoints = tmp_path / "checkpoints"
    _, model = run(generated, tmp_path, "first", checkpoint_dir=checkpoints)
    (checkpoints / ".state.pt.abc123.tmp").mkdir()  # what a kill during a save leaves
    os.rename(checkpoints, aside(checkpoints))  # what a kill during checkpoint.remove leaves
    with holding(checkpoints):
        again, model_again = run(generated, tmp_path, "again", checkpoint_dir=checkpoints)
    assert again["resumed_after"] == 3 and same_weights(model, model_again)
    assert not aside(checkpoints).exists() and not list(checkpoints.glob(".*.tmp"))


def test_a_folder_is_replaced_without_a_moment_without_it(tmp_path):
    """atomic_path on an existing folder: the old one is renamed aside, the new one takes its name, the old one is
    deleted; a temporary a killed writer left is deleted by the next writer."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (tmp_path / ".model.killed.tmp").mkdir()
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (tmp_path / ".model.killed.tmp").exists()
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("stage", ["prefinetune", "finetune"])
def test_an_infinite_loss_stops_with_one_line_and_its_retries_at_once(generated, tmp_path, stage):
    """A learning rate of 1e6 drives the loss to NaN within a few updates: the job stops with one line (the update, the
    tasks in it, the last finite loss) and writes no model or metrics; its retry stops at once with the same line
    (before training: the live log is not touched); with a sane learning rate it trains again."""
    tasks, tokenized, model_dir = generated
    out, live, checkpoints = tmp_path / "out", tmp_path / "live", tmp_path / "checkpoints"

    def job(lr):
        settings = {**SETTINGS, "lr": lr, "max_steps": 6, "epochs": 1}
        if stage == "prefinetune":
            prefinetune(tasks, tokenized, str(model_dir), settings, str(out), str(tmp_path / "log.tsv"),
                        str(checkpoints), str(live))
        else:
            finetune(task(generated, "score"), tokenized["score"], str(model_dir), settings, 1, str(out), str(tmp_path / "log.tsv"),
                     {"k": 0}, checkpoint_dir=str(checkpoints), live_dir=str(live))

    with pytest.raises(Fault) as first:
        job(1e6)
    message = str(first.value)
    found = re.fullmatch(r"(pre-finetune 3 tasks|fine-tune score): non-finite loss \(nan\) at update (\d) of 6, tasks in "
                         r"the update: [a-z, ]+; last finite loss: \S+ at update (\d); stopped, no model or metrics written",
                         message)
    assert found and int(found[3]) == int(found[2]) - 1, message
    assert not out.exists() and not (tmp_path / "log.tsv").exists()
    assert (checkpoints / checkpoint.FAILED).exists()
    touched = (live / "train_log.tsv").stat().st_mtime_ns
    with pytest.raises(Fault) as retry:
        job(1e6)
    assert str(retry.value).startswith(message + " [an earlier attempt of this run stopped so; a retry cannot help")
    assert (live / "train_log.tsv").stat().st_mtime_ns == touched
    job(1e-3)
    assert out.exists() and not checkpoints.exists()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_an_infinite_gradient_stops_the_run_but_under_fp16_is_the_scalers(generated, tmp_path, precision):
    """The gradient of one weight made infinite at update 2 (a tensor hook): under fp32 (and bf16) the run stops
    with one line naming the gradient norm; under fp16 an infinite gradient is what the gradient scaler is for: it
    skips that step and halves its scale, and the run goes on."""
    model, backward = model_of(generated), []

    def poison(grad):
        backward.append(1)
        return grad * float("inf") if len(backward) == 2 else grad

    next(model.encoder.parameters()).register_hook(poison)
    if precision == "fp32":
        with pytest.raises(Fault, match=r"^train: non-finite gradient norm \((inf|nan)\) at update 2 of 4, .*; last "
                                        r"finite loss: \S+ at update 1; stopped"):
            run(generated, tmp_path, "poisoned", steps=4, model=model, precision=precision)
        return
    summary, _ = run(generated, tmp_path, "poisoned", steps=4, model=model, precision=precision,
                     checkpoint_dir=tmp_path / "checkpoints")
    assert summary["steps"] == 4
    assert torch.load(tmp_path / "checkpoints" / checkpoint.STATE, weights_only=True)["scaler"]["scale"] == 2.0 ** 15


def test_out_of_memory_halves_the_micro_batches_of_the_same_updates(generated, tmp_path, capsys):
    """A forward pass of more than 4 rows raises torch.OutOfMemoryError (as CUDA would): the update is redone with
    each micro-batch cut in half, and so are the updates after it: the same examples, the same number of updates,
    the weights of an unlimited run up to float rounding, and the halving in the log and the summary."""
    def limited(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (raised by the test)")

    unlimited, model = run(generated, tmp_path, "unlimited", steps=5, grad_accum=2)
    capped = model_of(generated)
    capped.encoder.register_forward_pre_hook(limited, with_kwargs=True)
    summary, _ = run(generated, tmp_path, "capped", steps=5, grad_accum=2, model=capped)
    assert "out of memory at update 1 of 5: micro-batches cut in half, to 4 examples; 4 per update" in \
        capsys.readouterr().err
    assert (summary["micro_batch_halvings"], unlimited["micro_batch_halvings"]) == (1, 0)
    assert summary["steps"] == unlimited["steps"] == 5
    log, log_unlimited = (pd.read_csv(tmp_path / f"{n}.tsv", sep="\t") for n in ("capped", "unlimited"))
    assert list(log.tasks_in_update) == list(log_unlimited.tasks_in_update)
    assert log.loss.tolist() == pytest.approx(log_unlimited.loss.tolist(), rel=1e-4)
    for (name, a), b in zip(capped.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_a_stop_during_the_final_save_leaves_a_finished_checkpoint(generated, tmp_path, capsys):
    """SIGTERM while the trained model is being saved (``finish``): the save stops where it is, a checkpoint marked
    finished is written, the job exits 143; the retry goes straight to saving, without training again."""
    checkpoints = tmp_path / "checkpoints"
    saved = []

    def save_interrupted(summary):
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled in this very process
        saved.append(summary)  # never reached

    with pytest.raises(SystemExit) as stopped:
        run(generated, tmp_path, "stopped", checkpoint_dir=checkpoints, finish=save_interrupted)
    assert stopped.value.code == checkpoint.EXIT_INTERRUPTED and not saved
    assert "stop signal (SIGTERM) after the last update: saved the final state" in capsys.readouterr().err
    assert torch.load(checkpoints / checkpoint.STATE, weights_only=True)["finished"]["steps"] == 6

    summary, model = run(generated, tmp_path, "retried", checkpoint_dir=checkpoints, finish=lambda s: s)
    assert f"resuming from {checkpoints} after the last update (6 of 6)" in capsys.readouterr().err
    assert summary["resumed_after"] == 6 and summary["steps"] == 6
    plain, plain_model = run(generated, tmp_path, "plain")
    assert same_weights(model, plain_model) and summary["final_loss"] == plain["final_loss"]
    logs = [pd.read_csv(tmp_path / f"{name}.tsv", sep="\t").drop(columns="seconds") for name in ("retried", "plain")]
    pd.testing.assert_frame_equal(*logs)


def test_a_checkpoint_of_another_share_of_the_data_is_not_resumed(generated, tmp_path, capsys):
    """Fine-tuning on 50 % of the training data, stopped by SIGTERM (a real signal to this process, sent from its
    3rd training forward pass): it saves a checkpoint after update 3. Rerun with another sample_efficiency seed, which picks
    another 50 %, it starts over, says why, and ends as a clean run with that seed does."""
    tokenized, model_dir = generated[1], generated[2]
    settings = {**SETTINGS, "epochs": 2, "checkpoint_every": 1000}

    def job(name, seed, checkpoints):
        return finetune(task(generated, "single"), tokenized["single"], str(model_dir), settings, 1,
                        str(tmp_path / name / "metrics.json"), str(tmp_path / name / "log.tsv"), {"k": 0},
                        percent=50, fraction_seed=seed, checkpoint_dir=str(checkpoints))

    passes = []

    def stop_at_the_third(module, args):  # every module's forward: count the whole model's, in training
        if isinstance(module, MultiTaskModel) and module.training:
            passes.append(1)
            if len(passes) == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(stop_at_the_third)
    try:
        with pytest.raises(SystemExit) as stopped:
            job("stopped", 0, tmp_path / "checkpoints")
    finally:
        hook.remove()
    assert stopped.value.code == checkpoint.EXIT_INTERRUPTED
    assert torch.load(tmp_path / "checkpoints" / checkpoint.STATE, weights_only=True)["step"] == 3
    capsys.readouterr()
    other = job("other", 1, tmp_path / "checkpoints")
    assert "starting over: its share of the training data differs ({'percent': 50, 'seed': 0} then, " \
           "{'percent': 50, 'seed': 1} now)" in capsys.readouterr().err
    assert other == job("clean", 1, tmp_path / "clean_checkpoints")


def test_evaluation_refuses_non_finite_outputs(generated, tmp_path):
    tokenized = generated[1]
    model = model_of(generated)
    with torch.no_grad():
        next(model.heads["single"].parameters()).fill_(float("nan"))
    with pytest.raises(Fault, match=r"^task single: validation row 1: the model's output nan is not a finite number; "
                                    r"no metrics written$"):
        evaluate(model, task(generated, "single"), tokenized["single"], 1, SETTINGS)


@pytest.mark.parametrize("value, field", [(float("nan"), "value"), (None, "value"), (float("inf"), "metrics.f1")])
def test_aggregation_refuses_a_value_that_is_not_a_finite_number(tmp_path, value, field):
    record = {"k": 1, "draw": 1, "target": "t", "seed": 1, "metric": "accuracy", "value": 0.5,
              "metrics": {"accuracy": 0.5, "f1": 0.5}}
    if field == "value":
        record["value"] = value
    else:
        record["metrics"]["f1"] = value
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(record))  # json writes NaN and Infinity, and reads them back
    with pytest.raises(Fault, match=f"^{path}: {field}: {value!r} is not a finite number"):
        collect([str(path)], "main")
