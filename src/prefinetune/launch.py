"""Pre-finetuning on several processes of one node, one per GPU, started with torchrun.

The Snakemake job (``workflow_scripts/prefinetune.py``) writes its arguments to a JSON file and calls
:func:`run`, which starts ``python -m torch.distributed.run --standalone --nproc-per-node N -m
prefinetune.launch JOB.json``. Each of the N processes joins the process group and runs
:func:`prefinetune.stages.prefinetune`. Started without torchrun, ``python -m prefinetune.launch JOB.json``
is one ordinary process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import checkpoint, distributed
from .tasks import Task


def write_job(path: str | Path, tasks: list[Task], tokenized: dict[str, str], base_model: str, settings: dict,
              out_dir: str, log_tsv: str, checkpoint_dir: str | None) -> None:
    job = {"tasks": [dataclasses.asdict(t) for t in tasks], "tokenized": tokenized, "base_model": base_model,
           "settings": settings, "out_dir": out_dir, "log_tsv": log_tsv, "checkpoint_dir": checkpoint_dir}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(job, indent=2) + "\n")


def read_job(path: str | Path) -> dict:
    """The keyword arguments of :func:`prefinetune.stages.prefinetune`."""
    job = json.loads(Path(path).read_text())
    job["tasks"] = [Task(**{**t, "text": tuple(t["text"]), "choices": tuple(t["choices"])}) for t in job["tasks"]]
    return job


def torchrun_command(job_path: str | Path, processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", "prefinetune.launch", str(job_path)]


def run(job_path: str | Path, processes: int, threads: int = 1, log=None) -> int:
    """Run the job on ``processes`` processes; returns the exit code (143: stopped by a signal, checkpoint saved).

    SIGTERM and SIGUSR1 sent to this process are passed on as SIGTERM to torchrun, which passes it to every
    worker; the workers save a checkpoint at the end of the current update and exit.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // processes, 1))}
    proc = subprocess.Popen(torchrun_command(job_path, processes), env=env, stdout=log, stderr=log)
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in checkpoint.STOP_SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return checkpoint.EXIT_INTERRUPTED if forwarded and code != 0 else code


def main(argv: list[str] | None = None) -> None:
    from .stages import prefinetune

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m prefinetune.launch JOB.json")
    job = read_job(args[0])
    distributed.setup()
    try:
        prefinetune(**job)
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()
