"""Small glue used by ``workflow_scripts/``: send a job's stdout and stderr to its Snakemake log."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def logging_to(path: str):
    """Redirect stdout/stderr (progress bars, warnings, tracebacks) into ``path`` for the block."""
    with open(path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc(file=log)
            raise
