"""Pre-finetuning on several processes, one per GPU, on one node or on several nodes of a Slurm job.

The Snakemake job (``workflow_scripts/prefinetune.py``) writes its arguments to a JSON file and calls
:func:`run`. On one node that starts ``python -m torch.distributed.run --standalone --nproc-per-node N -m
prefinetune.launch JOB.json``. On several nodes the job runs in the batch step of its Slurm allocation, on the
first node, and :func:`run` starts ``srun`` with one torchrun agent per node; the agents meet (c10d
rendezvous) on this first node and start N processes each. Every process joins the process group and runs
:func:`prefinetune.stages.prefinetune`. Started without torchrun, ``python -m prefinetune.launch JOB.json``
is one ordinary process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from . import checkpoint, distributed
from .faults import Fault
from .stages import prefinetune
from .tasks import Task, from_params, params


def write_job(path: str | Path, tasks: list[Task], tokenized: dict[str, str], base_model: str, settings: dict,
              out_dir: str, log_tsv: str, checkpoint_dir: str | None, live_dir: str | None = None) -> None:
    job = {"tasks": [params(t) for t in tasks], "tokenized": tokenized, "base_model": base_model,
           "settings": settings, "out_dir": out_dir, "log_tsv": log_tsv, "checkpoint_dir": checkpoint_dir,
           "live_dir": live_dir}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(job, indent=2) + "\n")


def read_job(path: str | Path) -> dict:
    """The keyword arguments of :func:`prefinetune.stages.prefinetune`."""
    job = json.loads(Path(path).read_text())
    job["tasks"] = [from_params(t) for t in job["tasks"]]
    return job


def gres_gpus(gres: str) -> int:
    """GPUs per node of a Slurm --gres request: 'gpu:4' and 'gpu:a100:4' -> 4, 'gpu' -> 1, '' -> 0."""
    for item in filter(None, gres.split(",")):
        name, *rest = item.split(":")
        if name == "gpu":
            return int(rest[-1]) if rest and rest[-1].isdigit() else 1
    return 0


def torchrun_command(job_path: str | Path, processes: int) -> list[str]:
    """One node: torchrun starts ``processes`` workers here."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", "prefinetune.launch", str(job_path)]


def multinode_command(job_path: str | Path, nodes: int, processes: int, gpus: int, threads: int, job_id: str,
                      head: str) -> list[str]:
    """Several nodes of the Slurm job ``job_id``: srun starts one torchrun agent on each node, which starts
    ``processes`` workers there. The agents meet at ``head`` (this host, the allocation's first node) on a port
    derived from the job id, so that two jobs sharing a first node do not collide.

    The step asks for its CPUs and GPUs explicitly: since Slurm 22.05 srun does not inherit the job's
    --cpus-per-task, and the Slurm executor drops the job's SLURM_* variables before running the job.
    """
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={threads}",
            "--kill-on-bad-exit=1"] + ([f"--gres=gpu:{gpus}"] if gpus else [])
    port = 20000 + int(job_id) % 20000
    return srun + [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                   f"--nproc-per-node={processes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={head}:{port}",
                   f"--rdzv-id={job_id}", "--max-restarts=0", "-m", "prefinetune.launch", str(job_path)]


def run(job_path: str | Path, processes: int, threads: int = 1, log=None, nodes: int = 1, gpus: int = 0) -> int:
    """Run the job on ``processes`` processes per node on ``nodes`` nodes (``gpus`` GPUs per node); returns
    the exit code (143: stopped by a signal, checkpoint saved; other non-zero codes: failed).

    ``threads`` is the CPUs per node. SIGTERM and SIGUSR1 sent to this process are passed on as SIGTERM to
    torchrun (or srun), which passes it to every worker; the workers save a checkpoint at the end of the
    current update and exit. On a cluster Slurm's warning signal (--signal) reaches the srun step's
    processes directly.
    """
    if nodes == 1:
        command = torchrun_command(job_path, processes)
    else:
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id is None:
            raise RuntimeError(f"pre-finetuning on {nodes} nodes (resources.prefinetune.nodes) runs inside a Slurm "
                               "job only: run Snakemake with the Slurm profile (--profile slurm)")
        command = multinode_command(job_path, nodes, processes, gpus, threads, job_id, socket.gethostname())
    env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // processes, 1)), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, env=env, stdout=None if log is None else subprocess.PIPE,
                            stderr=None if log is None else subprocess.STDOUT, text=True)
    pump = None
    if log is not None:  # the processes' output into the job's log stream (a file, or several: workflow.Tee)
        pump = threading.Thread(target=lambda: [log.write(line) for line in proc.stdout], daemon=True)
        pump.start()
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
    if pump is not None:
        pump.join()
    return checkpoint.EXIT_INTERRUPTED if forwarded and code != 0 else code


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m prefinetune.launch JOB.json")
    job = read_job(args[0])
    distributed.setup()
    try:
        prefinetune(**job)
    except Fault as fault:  # one line (from rank 0), as workflow.logging_to gives a job of one process
        if distributed.is_main():
            print(f"Error: {fault}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()
