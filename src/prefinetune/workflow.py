"""Small glue used by ``workflow_scripts/``: a job's log, its checkpoint folder (and who holds it, so that the
checkpoints of jobs that are not running can be removed) and its live folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .config import checkpoint_root
from .faults import Fault
from .io import write_json
from .tasks import ConfigError


def checkpoint_dir(output: str, config: dict) -> str:
    """<the config's checkpoint folder>/<the output's folder> (by default checkpoints/<the output's folder>): outside
    the outputs, which Snakemake deletes when a job fails."""
    return str(Path(checkpoint_root(config)) / Path(output).parent)


OWNER = "owner.json"  # in a checkpoint folder while its job runs: the host, process and Slurm job holding it


@contextlib.contextmanager
def holding(folder: str | Path):
    """Mark ``folder`` (a training job's checkpoint folder) as this job's while the block runs, so that
    :func:`clean_checkpoints` keeps it; the folder goes when the block ends if nothing else is left in it."""
    path = Path(folder) / OWNER
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: a checkpoint to resume from
            path.parent.rmdir()


def running(owner: dict) -> bool | None:
    """Whether the job that wrote ``owner`` (see :func:`holding`) is still running or queued: a Slurm job that squeue
    lists (pending, running or requeued), else a live process on this host; None where this cannot be told (another
    host without Slurm, or no squeue here)."""
    if owner.get("slurm_job"):
        try:
            listed = subprocess.run(["squeue", "--noheader", "--format=%T", f"--jobs={owner['slurm_job']}"],
                                    capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if listed.returncode == 0:
            return bool(listed.stdout.strip())
        return False if "Invalid job id" in listed.stderr else None
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that id: alive
        return True
    return True


def clean_checkpoints(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Remove every checkpoint folder under ``root`` whose job is not running (failed for good, stopped, or killed);
    returns the folders removed and those kept, each with why. A folder without an owner (a job killed before
    this was recorded, or one of an older version) is not running."""
    removed, kept = [], []
    for folder in sorted({p.parent for name in ("state.pt", OWNER) for p in Path(root).rglob(name)}):
        if folder.name.endswith(".tmp"):  # a save being written (io.atomic_path): it goes with its folder
            continue
        try:
            owner = json.loads((folder / OWNER).read_text())
        except (OSError, ValueError):
            owner = {}
        alive = running(owner) if owner else False
        if alive is False:
            shutil.rmtree(folder)
            removed.append(folder)
        else:
            where = f"Slurm job {owner['slurm_job']}" if owner.get("slurm_job") else f"process {owner['pid']} on {owner['host']}"
            kept.append((folder, f"{where} {'is running' if alive else 'cannot be checked from here'}"))
    return removed, kept


def live_dir(output: str) -> str:
    """logs/<the output's folder>: the live record of a training job (train_log.tsv as it trains, TensorBoard
    events, attempts.log: the log of every attempt), beside its log file, outside the outputs (kept when a job
    fails, continued when it resumes)."""
    return str(Path("logs") / Path(output).parent)


class Tee:
    """A text stream writing to several files at once (a job's log and its history of attempts)."""

    encoding = "utf-8"

    def __init__(self, *files):
        self.files = files

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        for f in self.files:
            f.write(text)
        return len(text)

    def flush(self) -> None:
        for f in self.files:
            f.flush()


@contextlib.contextmanager
def logging_to(path: str, history: str | Path | None = None):
    """Redirect stdout/stderr (progress bars, warnings, tracebacks) into ``path`` for the block; yields the stream.

    Snakemake empties a job's log before each attempt; with ``history`` (a training job's
    ``logs/<output folder>/attempts.log``) every line also goes there, appended after a header line per attempt,
    so that a retried or requeued job keeps the logs of the attempts before it. A mistake in the user's files
    (:class:`ConfigError`) or a fault no retry can heal (:class:`Fault`: a NaN, say) ends the job with its one
    line, in the log and on Snakemake's console, instead of a traceback."""
    with contextlib.ExitStack() as files:
        log = files.enter_context(open(path, "w", buffering=1))
        if history is not None:
            Path(history).parent.mkdir(parents=True, exist_ok=True)
            log = Tee(log, files.enter_context(open(history, "a", buffering=1)))
        job = os.environ.get("SLURM_JOB_ID")
        print(f"=== attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}, process "
              f"{os.getpid()}{f', Slurm job {job}' if job else ''}, Python {sys.executable} ===", file=log)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                yield log
            except SystemExit:  # a deliberate exit (e.g. 143 after saving a checkpoint) has said why already
                raise
            except (ConfigError, Fault) as error:
                print(f"Error: {error}", file=log)
                raise SystemExit(f"Error: {error}") from None
            except BaseException:
                traceback.print_exc(file=log)
                raise
