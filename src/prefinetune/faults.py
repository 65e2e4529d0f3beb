"""Faults a job cannot heal. It stops with one line that says what happened (docs/reliability.md).

:class:`Fault` is such a stop: a non-finite loss or gradient norm in training, non-finite model outputs in
evaluation, a ``metrics.json`` holding a value that is not a number. ``workflow.logging_to`` ends the job with
its line, as it does a mistake in the user's files (``tasks.ConfigError``), instead of a traceback. This module
imports nothing, so that every job can name the class.
"""


class Fault(RuntimeError):
    """A fault a retry cannot heal; its message is one line: what, where (file, field, row or update)."""
