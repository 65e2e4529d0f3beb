"""Small glue used by ``workflow_scripts/``: send a job's stdout and stderr to its Snakemake log."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def logging_to(path: str):
    """Redirect stdout/stderr (progress bars, warnings, tracebacks) into ``path`` for the block; yields the file."""
    with open(path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield log
        except SystemExit:  # a deliberate exit (e.g. 143 after saving a checkpoint) has said why already
            raise
        except BaseException:
            import traceback

            traceback.print_exc(file=log)
            raise
