"""Small glue used by ``workflow_scripts/``: send a job's stdout and stderr to its Snakemake log."""

from __future__ import annotations

import contextlib

from .tasks import ConfigError


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
            import traceback

            traceback.print_exc(file=log)
            raise
