"""Training checkpoints, so that a preempted or timed-out job resumes where it stopped.

A checkpoint is one file, ``<dir>/state.pt``, written atomically by rank 0 every ``checkpoint_every``
updates and when a stop signal arrives. It holds everything the next update depends on: model and heads,
optimizer, scheduler, sampler counters, the update number, the log rows and running losses, and the torch,
CUDA, numpy and Python RNG states of every rank. So a resumed run on the CPU ends with exactly the weights
and log of an uninterrupted one. A stop signal after the last update (during evaluation or the final save)
saves a checkpoint marked finished, from which a retry goes straight to evaluating and saving.

It holds tensors and plain values only, and is read with ``torch.load(weights_only=True)``: loading one runs
no code, whoever could write to the folder. A checkpoint that cannot be read (cut short, empty, overwritten)
or does not fit the model is renamed aside to ``state.pt.bad`` with one line saying why, and the job starts
over. It is written through ``io.atomic_path`` (fsynced, then renamed), so a kill at any instant leaves the
previous checkpoint or the new one; a job first deletes the temporaries a killed save left.

A checkpoint carries a fingerprint of the run: its settings, steps, task sizes, number of processes, and the
identity of what it read (a content hash of its encoder's folder and of each tokenized dataset, and for
fine-tuning the share of the training data and its seed). One made by a different run, or from other inputs
(say, a pre-finetuned model rebuilt since), is ignored, never resumed from: the job starts over and its log
says why. The directory lies outside Snakemake's outputs, because Snakemake deletes the outputs of a failed
job; the stage removes it once the final model is written (renamed aside first, so that a kill during the
removal leaves it whole, and the next attempt puts it back).

A run that stops on a non-finite loss leaves ``<dir>/failed.json``: its fingerprint and its line. A retry of
the same run stops at once with that line (on the CPU the same inputs give the same NaN; docs/reliability.md);
a run with other settings or inputs deletes it and trains.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .faults import Fault
from .io import aside, atomic_path, remove_temporaries, remove_tree, write_json

STATE = "state.pt"
FAILED = "failed.json"  # a run that stopped on a fault no retry heals: its fingerprint and its line
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, also for SIGUSR1: "stopped early, checkpoint saved, run me again"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # Slurm: time limit / preemption, and --signal advance warning
NOT_FINGERPRINTED = ("checkpoint_every", "log_every", "eval_batch_size", "report_to")  # run options: no result changes


def fingerprint(settings: dict, steps: int, sizes: dict[str, int], world: int, inputs: dict | None = None) -> dict:
    """What a checkpoint must match to be resumed: the run's settings (not its run options), steps, task sizes,
    process count, and ``inputs``, the identity of what it read (e.g. {"encoder": digest, "data": {...}})."""
    kept = {k: v for k, v in settings.items() if k not in NOT_FINGERPRINTED}
    return json.loads(json.dumps({"settings": kept, "steps": steps, "sizes": sizes, "processes": world,
                                  "inputs": inputs or {}}, sort_keys=True, default=str))


def differences(saved, expected: dict) -> str:
    """Why a saved fingerprint does not match: the parts that differ, in words."""
    if not isinstance(saved, dict):
        return "it was made by an earlier version of this code"
    names = {"settings": "settings", "steps": "the number of updates", "sizes": "the task sizes",
             "processes": "the number of processes", "inputs": "the inputs"}
    parts = []
    for key, name in names.items():
        old, new = saved.get(key), expected.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
            if key != "inputs":
                parts.append(f"{name} differ ({', '.join(changed)})")
            elif "share" in changed:  # fine-tuning on a share of the data: another percent or order
                parts.append(f"its share of the training data differs ({old.get('share')} then, {new.get('share')} now)")
            if key == "inputs" and set(changed) - {"share"}:
                parts.append(f"its {' and '.join(sorted(set(changed) - {'share'}))} changed since (rebuilt or replaced)")
        else:
            parts.append(f"{name} differ ({old} then, {new} now)")
    return "; ".join(parts)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain values (so that a checkpoint loads with weights_only=True)."""
    state = np.random.get_state(legacy=False)
    numpy = {**state, "state": {"key": torch.from_numpy(state["state"]["key"].astype(np.int64)),
                                "pos": int(state["state"]["pos"])}}
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": numpy, "python": [version, list(internal), gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state({**numpy, "state": {"key": numpy["state"]["key"].numpy().astype(np.uint32),
                                            "pos": numpy["state"]["pos"]}})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: str | Path, stamp: dict, rngs: list[dict], **state) -> None:
    """Write ``state`` atomically: plain values as they are, objects with ``state_dict()`` through it. A write
    that fails (a full disk, a file-size limit) raises its OSError, and the previous checkpoint stays."""
    payload = {name: value.state_dict() if hasattr(value, "state_dict") else value for name, value in state.items()}
    with atomic_path(Path(directory) / STATE) as tmp, open(tmp, "wb") as f:
        sink = _Sink(f)
        try:
            torch.save({**payload, "fingerprint": stamp, "rng": rngs}, sink)
        except RuntimeError:
            if sink.error is not None:  # torch reports a failed write as "unexpected pos"; say what failed
                raise sink.error from None
            raise


class _Sink:
    """A file for torch.save that keeps the OSError of a failed write (torch turns it into a RuntimeError)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def restore(saved: dict, rank: int, **objects) -> None:
    """Load the saved state into ``objects`` (model, optimizer, ...) and this rank's RNG states."""
    for name, obj in objects.items():
        obj.load_state_dict(saved[name])
    set_rng_state(saved["rng"][rank])


def resume(directory: str | Path, expected_fingerprint: dict, model: torch.nn.Module) -> dict | None:
    """The checkpoint to resume from, the same on every rank, or None. Rank 0 tidies the folder (:func:`load`)
    and checks for an earlier failure of this run, which stops every rank with its line (a :class:`Fault`);
    the other ranks then read the checkpoint it accepted."""
    verdict = None
    if distributed.is_main():
        failure = earlier_failure(directory, expected_fingerprint)
        saved = None if failure else load(directory, expected_fingerprint, model)
        verdict = {"failure": failure, "resume": saved is not None}
    verdict = distributed.from_main(verdict)
    if verdict["failure"]:
        raise Fault(verdict["failure"])
    if not verdict["resume"]:
        return None
    return saved if distributed.is_main() else torch.load(Path(directory) / STATE, map_location="cpu",
                                                           weights_only=True)


def load(directory: str | Path, expected_fingerprint: dict, model: torch.nn.Module | None = None) -> dict | None:
    """The checkpoint in ``directory`` if there is one from this very run, else None (saying why).

    First the folder is tidied after a kill (:func:`recover`): the checkpoint of a folder caught while being
    removed comes back, the temporaries of a killed save go. A file that cannot be read, or does not fit ``model``, is renamed aside (``.bad``); one of
    another run (other settings or inputs) is left, for this run's first checkpoint to replace."""
    directory = Path(directory)
    path = directory / STATE
    recover(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as error:  # a file cut short, empty or overwritten: torch, zipfile and pickle each say so
        payload = _unreadable(error)
    if not isinstance(payload, dict):
        problem = payload if isinstance(payload, str) else f"it holds a {type(payload).__name__}, not a checkpoint"
    elif payload.get("fingerprint") != expected_fingerprint:
        why = differences(payload.get("fingerprint"), expected_fingerprint)
        print(f"ignoring checkpoint {path}, starting over: {why}", file=sys.stderr)
        return None
    else:
        problem = _misfit(payload, model)
    if problem:
        bad = path.with_name(STATE + ".bad")
        path.replace(bad)
        print(f"setting checkpoint {path} aside as {bad.name}, starting over: {problem}", file=sys.stderr)
        return None
    return payload


def recover(path: Path) -> None:
    """Tidy a checkpoint folder after a kill: a checkpoint left in the folder renamed aside for removal (a kill
    during :func:`remove`) comes back where the folder has none (the job's start may have made the folder anew);
    the aside folder and the temporaries of a killed save go."""
    old = aside(path.parent)
    if old.is_dir():
        if (old / STATE).is_file() and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old / STATE, path)
        shutil.rmtree(old)
    remove_temporaries(path)


def _misfit(payload: dict, model: torch.nn.Module | None) -> str | None:
    """What makes a checkpoint of this run unusable by ``model`` (parts missing, tensors of other names or
    shapes), or None; without a model, nothing is checked."""
    if model is None:
        return None
    needed = ["model", "step", "log_rows"]
    if not payload.get("finished"):
        needed += ["seconds", "running", "early", "optimizer", "scheduler", "sampler", "scaler", "rng"]
    missing = [key for key in needed if key not in payload]
    if missing:
        return f"it has no {', '.join(missing)}"
    own, saved = model.state_dict(), payload["model"]
    if not isinstance(saved, dict) or set(saved) != set(own):
        return "its model has other parameters than this one"
    wrong = [k for k, v in own.items() if not isinstance(saved[k], torch.Tensor) or saved[k].shape != v.shape]
    return f"its {wrong[0]} has another shape than this model's" if wrong else None


def _unreadable(error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in one line: an object it would not build (whose loading
    would run code), or bytes that are no checkpoint."""
    text = str(error)
    refused = re.search(r"unsupported GLOBAL (\S+)", text)
    if refused:
        return f"it holds a {refused[1]} object, which loading would run (a checkpoint holds tensors and plain values)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
    return f"it cannot be read ({type(error).__name__}: {detail[:160]})"


def earlier_failure(directory: str | Path, expected_fingerprint: dict) -> str | None:
    """The line an earlier attempt of this very run stopped with, if it left one; a failure of another run
    (other settings or inputs: the cause may be fixed) is deleted."""
    path = Path(directory) / FAILED
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record["fingerprint"] == expected_fingerprint:
            return (f"{record['message']} [an earlier attempt of this run stopped so; a retry cannot help: fix the "
                    f"cause, or delete {path}]")
    except (ValueError, KeyError, TypeError):
        pass  # unreadable: not a record of this run
    path.unlink()
    return None


def record_failure(directory: str | Path, expected_fingerprint: dict, message: str) -> None:
    """Leave the line a run stopped with where its retry looks first (:func:`earlier_failure`)."""
    write_json(Path(directory) / FAILED, {"fingerprint": expected_fingerprint, "message": message})


def remove(directory: str | Path) -> None:
    """Delete a finished run's checkpoint folder (renamed aside first: a kill midway leaves it for recover)."""
    remove_tree(Path(directory))


class Interrupted(Exception):
    """A stop signal after the last update (:meth:`StopSignals.urgent`): the job saves its final state and exits."""


class StopSignals:
    """While active, SIGTERM and SIGUSR1 only record that a stop was asked for; the loop then saves and exits.
    Inside :meth:`urgent` (the evaluation and saving after the last update, where no loop looks) a stop raises
    :class:`Interrupted` where the job is, once. SIGXFSZ is ignored meanwhile: a write beyond the file-size
    limit (RLIMIT_FSIZE) then fails with EFBIG, which the job handles, instead of killing the process."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}
        self._urgent = False

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        if self._urgent:
            self._urgent = False  # once: a second signal must not interrupt the saving of the final state
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def urgent(self):
        """A stop signal (or one received before) raises :class:`Interrupted` at once inside this block."""
        if self.received is not None:
            raise Interrupted(self.received)
        self._urgent = True
        try:
            yield
        finally:
            self._urgent = False

    def __enter__(self) -> "StopSignals":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
