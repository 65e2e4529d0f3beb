"""Task families: everything that differs between kinds of task, one module per family (jiant's task classes).

A family handles one or more registry types and gives each step of the pipeline its part:

  registry     ``check_entry``: the fields only this family reads
  download     ``input_columns``, ``prepare`` (the task as the data completes it), ``layout``: a split checked
               row by row and put into the family's on-disk layout
  tokenize     ``encoder``: a batched ``datasets.map`` function from that layout to model inputs
  collate      ``read_labels`` (a tokenized split's labels as numpy) and ``batch_labels`` (a batch's tensor)
  model        ``make_head`` (None: no new parameters), ``outputs`` (the head on a segment's rows),
               ``losses`` (per-example loss, unscaled) and ``outputs_count`` (n of Muppet's 1 / log(n))
  evaluation   ``evaluate``: the metrics of ``metrics[type]`` on the validation split

Adding a family is one new module with a :class:`Family` subclass, listed in ``FAMILIES`` below.
"""

from __future__ import annotations

from ..tasks import ConfigError
from .base import Family
from .classification import Classification
from .multiple_choice import MultipleChoice
from .span import Span
from .summarization import Summarization

FAMILIES: dict[str, Family] = {kind: f for f in (Classification(), MultipleChoice(), Span(), Summarization()) for kind in f.types}
TYPES = tuple(FAMILIES)  # every registry type


def family(task_or_type) -> Family:
    """The family of a task (or of a registry type)."""
    kind = task_or_type if isinstance(task_or_type, str) else task_or_type.type
    if kind not in FAMILIES:
        raise ConfigError(f"unknown task type '{kind}'; expected one of {list(TYPES)}")
    return FAMILIES[kind]
