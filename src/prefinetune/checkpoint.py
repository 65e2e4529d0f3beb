"""Training checkpoints, so that a preempted or timed-out job resumes where it stopped.

A checkpoint is one file, ``<dir>/state.pt``, written atomically by rank 0 every ``checkpoint_every``
updates and when a stop signal arrives. It holds everything the next update depends on: model and heads,
optimizer, scheduler, sampler counters, the update number, the log rows and running losses, and the torch,
CUDA, numpy and Python RNG states of every rank. So a resumed run on the CPU ends with exactly the weights
and log of an uninterrupted one.

A checkpoint carries a fingerprint of the run: its settings, steps, task sizes, number of processes, and the
identity of what it read (a content hash of its encoder's folder and of each tokenized dataset). One made by a
different run, or from other inputs (say, a pre-finetuned model rebuilt since), is ignored, never resumed from:
the job starts over and its log says why. The directory lies outside Snakemake's outputs, because Snakemake
deletes the outputs of a failed job; the stage removes it once the final model is written.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path

STATE = "state.pt"
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
            parts.append(f"{name} differ ({', '.join(changed)})" if key != "inputs" else
                         f"its {' and '.join(changed)} changed since (rebuilt or replaced)")
        else:
            parts.append(f"{name} differ ({old} then, {new} now)")
    return "; ".join(parts)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: str | Path, stamp: dict, rngs: list[dict], **state) -> None:
    """Write ``state`` atomically: plain values as they are, objects with ``state_dict()`` through it."""
    payload = {name: value.state_dict() if hasattr(value, "state_dict") else value for name, value in state.items()}
    with atomic_path(Path(directory) / STATE) as tmp:
        torch.save({**payload, "fingerprint": stamp, "rng": rngs}, tmp)


def restore(saved: dict, rank: int, **objects) -> None:
    """Load the saved state into ``objects`` (model, optimizer, ...) and this rank's RNG states."""
    for name, obj in objects.items():
        obj.load_state_dict(saved[name])
    set_rng_state(saved["rng"][rank])


def load(directory: str | Path, expected_fingerprint: dict) -> dict | None:
    """The checkpoint in ``directory`` if there is one from this very run, else None (saying why)."""
    path = Path(directory) / STATE
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states are not tensors
    if payload.get("fingerprint") != expected_fingerprint:
        why = differences(payload.get("fingerprint"), expected_fingerprint)
        print(f"ignoring checkpoint {path}, starting over: {why}", file=sys.stderr)
        return None
    return payload


def remove(directory: str | Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class StopSignals:
    """While active, SIGTERM and SIGUSR1 only record that a stop was asked for; the loop then saves and exits."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
