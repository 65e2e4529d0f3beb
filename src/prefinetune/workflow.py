"""Small glue used by ``workflow_scripts/``: a job's log and its checkpoint folder."""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

from .tasks import ConfigError


def checkpoint_dir(output: str) -> str:
    """checkpoints/<the output's folder>: outside the outputs, which Snakemake deletes when a job fails."""
    return str(Path("checkpoints") / Path(output).parent)


@contextlib.contextmanager
def logging_to(path: str):
    """Redirect stdout/stderr (progress bars, warnings, tracebacks) into ``path`` for the block; yields the file.

    A mistake in the user's files (:class:`ConfigError`) ends the job with its one line, in the log and on
    Snakemake's console, instead of a traceback."""
    with open(path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
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
