"""Faults injected for real into pre-finetuning jobs run as the rule runs them (``python -m prefinetune.launch
JOB.json``, one process), on conftest's tiny generated inputs: SIGKILLs during checkpoint saves, and a
file-size limit (RLIMIT_FSIZE) that makes the periodic saves, or the final save, fail. What each shows is in
docs/reliability.md."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from prefinetune import checkpoint
from prefinetune.config import DEFAULT_TRAIN
from data_helpers import GENERATED_MAX_LENGTH
from test_distributed_resume import ENV, log_columns, weights, write_job

SETTINGS = {**DEFAULT_TRAIN, "max_steps": 30, "batch_size": 8, "lr": 1e-3, "dropout": 0.1, "log_every": 1,
            "checkpoint_every": 1, "max_length": GENERATED_MAX_LENGTH}


def start(run, limit: int | None = None):
    """The job in a process of its own; ``limit``: the largest file it may write (RLIMIT_FSIZE), in bytes."""
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    log = open(run / "stderr.log", "a")
    return subprocess.Popen([sys.executable, "-m", "prefinetune.launch", str(run / "job.json")], stdout=log,
                            stderr=log, env={**os.environ, **ENV}, preexec_fn=cap if limit else None)


def attempts(run) -> list[str]:
    return (run / "stderr.log").read_text().split("=== attempt ===\n")


@pytest.fixture(scope="module")
def uninterrupted(generated, tmp_path_factory):
    run = write_job(tmp_path_factory.mktemp("runs"), "uninterrupted", generated, generated[2], SETTINGS)
    assert start(run).wait(timeout=300) == 0, (run / "stderr.log").read_text()[-3000:]
    return run


def kill_during(proc, run, folder, prefix: str, saves_before: int = 0) -> None:
    """SIGKILL the job while a temporary ``prefix*`` of its own exists in ``folder`` (a save is being written), once
    this attempt has completed ``saves_before`` checkpoints (each renames a new state.pt into place)."""
    state = run / "checkpoints" / checkpoint.STATE

    def identity():
        with contextlib.suppress(FileNotFoundError):
            stat = state.stat()
            return stat.st_ino, stat.st_mtime_ns
        return None

    def temporaries():
        return {p.name for p in folder.iterdir() if p.name.startswith(prefix)} if folder.exists() else set()

    seen = {identity()} - {None}  # the checkpoint the attempt resumed from
    resumed_from, left = len(seen), temporaries()  # what the kill before left (this attempt deletes it)
    while not (len(seen) - resumed_from >= saves_before and temporaries() - left):
        assert proc.poll() is None, attempts(run)[-1][-3000:]
        seen |= {identity()} - {None}
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)


def temporaries(folder) -> list:
    return [p for p in folder.rglob(".*.tmp")] if folder.exists() else []


def test_sigkills_during_checkpoint_saves_lose_nothing(tmp_path, generated, uninterrupted):
    """8 SIGKILLs, each while a checkpoint is being written (its temporary exists; checkpoint_every 1), during the
    attempt's 1st, 2nd or 3rd save. After every kill the last checkpoint is there and whole, the next attempt
    resumes from it (never from further back), and the final weights and log equal an uninterrupted run's; no
    temporary is left behind."""
    run = write_job(tmp_path, "killed", generated, generated[2], SETTINGS)
    state, resumed = run / "checkpoints" / checkpoint.STATE, []
    for kill in range(8):
        with open(run / "stderr.log", "a") as log:
            log.write("=== attempt ===\n")
        proc = start(run)
        kill_during(proc, run, run / "checkpoints", f".{checkpoint.STATE}.", saves_before=kill % 3)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        assert not (run / "model").exists()
        # the last checkpoint is there and whole: the one resumed from, plus the saves this attempt completed
        before = resumed[-1] if resumed else 0
        step = torch.load(state, weights_only=True)["step"] if before or state.exists() else 0
        assert step >= before + kill % 3, f"kill {kill + 1}: from update {before} to {step}"
        resumed.append(step)

    with open(run / "stderr.log", "a") as log:
        log.write("=== attempt ===\n")
    assert start(run).wait(timeout=300) == 0, attempts(run)[-1][-3000:]
    logs = attempts(run)[1:]
    for log, step in zip(logs[1:], resumed):  # each attempt resumed from the checkpoint the kill before it left
        assert step == 0 or f"resuming from {run / 'checkpoints'} after update {step} of 30" in log, log[-2000:]
    assert weights(run).keys() == weights(uninterrupted).keys()
    assert all(torch.equal(a, b) for a, b in zip(weights(run).values(), weights(uninterrupted).values()))
    assert log_columns(run) == log_columns(uninterrupted)
    assert not (run / "checkpoints").exists() and not temporaries(run)
    assert len(set(resumed)) > 3, resumed  # the kills met saves at different updates


def test_a_file_size_limit_skips_periodic_checkpoints_and_the_run_ends_as_it_would(tmp_path, generated, uninterrupted):
    """Writes capped (RLIMIT_FSIZE) between the model's size and a checkpoint's (weights and optimizer state): every
    periodic save fails with EFBIG (SIGXFSZ is ignored, so it does not kill the job), warns, and training goes
    on; the model itself fits and is written, equal to an uninterrupted run's."""
    model_bytes = (uninterrupted / "model" / "model.safetensors").stat().st_size
    run = write_job(tmp_path, "capped", generated, generated[2], {**SETTINGS, "checkpoint_every": 10})
    assert start(run, limit=2 * model_bytes).wait(timeout=300) == 0, (run / "stderr.log").read_text()[-3000:]
    log = (run / "stderr.log").read_text()
    for step in (10, 20):
        assert (f"warning: no checkpoint after update {step}: writing {run / 'checkpoints'}/state.pt failed "
                "([Errno 27] File too large)") in log
    assert all(torch.equal(a, b) for a, b in zip(weights(run).values(), weights(uninterrupted).values()))
    assert log_columns(run) == log_columns(uninterrupted)
    assert not (run / "checkpoints").exists() and not temporaries(run)


def test_a_final_save_that_fails_leaves_no_output(tmp_path, generated, uninterrupted):
    """Writes capped below the model's size: the final save fails, the job fails with it (the error names the
    limit), and no model folder, nor any part of one, is left."""
    model_bytes = (uninterrupted / "model" / "model.safetensors").stat().st_size
    run = write_job(tmp_path, "capped", generated, generated[2], {**SETTINGS, "max_steps": 5, "checkpoint_every": 100})
    assert start(run, limit=model_bytes // 2).wait(timeout=300) != 0
    assert "File too large" in (run / "stderr.log").read_text().strip().splitlines()[-1]
    assert not (run / "model").exists() and not temporaries(run)
