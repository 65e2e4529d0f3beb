"""Small glue used by ``workflow_scripts/``: a job's log, its checkpoint folder and its live folder."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import traceback
from pathlib import Path

from .tasks import ConfigError


def checkpoint_dir(output: str) -> str:
    """checkpoints/<the output's folder>: outside the outputs, which Snakemake deletes when a job fails."""
    return str(Path("checkpoints") / Path(output).parent)


def live_dir(output: str) -> str:
    """logs/<the output's folder>: the live record of a training job (train_log.tsv as it trains, TensorBoard
    events), beside its log file, outside the outputs (kept when a job fails, continued when it resumes)."""
    return str(Path("logs") / Path(output).parent)


@contextlib.contextmanager
def logging_to(path: str):
    """Redirect stdout/stderr (progress bars, warnings, tracebacks) into ``path`` for the block; yields the file.

    The log is appended to, after a header line per attempt, so that a retried or requeued job keeps the logs of
    the attempts before it. A mistake in the user's files (:class:`ConfigError`) ends the job with its one line,
    in the log and on Snakemake's console, instead of a traceback."""
    with open(path, "a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        job = os.environ.get("SLURM_JOB_ID")
        print(f"=== attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}, process "
              f"{os.getpid()}{f', Slurm job {job}' if job else ''} ===", file=log)
        try:
            yield log
        except SystemExit:  # a deliberate exit (e.g. 143 after saving a checkpoint) has said why already
            raise
        except ConfigError as error:
            print(f"Error: {error}", file=log)
            raise SystemExit(f"Error: {error}") from None
        except BaseException:
            traceback.print_exc(file=log)
            raise
