"""Small glue used by ``workflow_scripts/``: a job's log, its checkpoint folder and its live folder."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from .faults import Fault
from .tasks import ConfigError


def checkpoint_dir(output: str) -> str:
    """checkpoints/<the output's folder>: outside the outputs, which Snakemake deletes when a job fails."""
    return str(Path("checkpoints") / Path(output).parent)


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
