"""Task families: everything that differs between kinds of task, one module per family (jiant's task classes).

Each module gives its family's three parts (``base.py``): ``data`` (registry checks, layout, tokenization,
labels), ``model`` (head, outputs, loss) and ``scorer`` (metrics from accumulated outputs). The layers above ask
a task's family and never branch on its type:

  download, tokenize   data.py        family(task).data
  training             heads.py       family(task).model
  evaluation           evaluation.py  family(task).scorer

Adding a family is one new module with its three parts, listed in ``FAMILIES`` below, and its types in
``tasks.TYPES``.
"""

from __future__ import annotations

from pathlib import Path

from ..tasks import TYPES, ConfigError, Task, read_registry
from . import classification, multiple_choice, span, summarization
from .base import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (classification.FAMILY, multiple_choice.FAMILY, span.FAMILY,
                                                   summarization.FAMILY)}
assert set(FAMILIES) == set(TYPES.values()), "every family of tasks.TYPES has one module, and only those"

# The metrics computed for each task type; a task's headline metric must be one of these.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {kind: FAMILIES[name].scorer.metrics[kind] for kind, name in TYPES.items()}
ALL_METRICS = tuple(dict.fromkeys(m for ms in METRICS_BY_TYPE.values() for m in ms))


def family(task_or_type: Task | str) -> Family:
    """The family of a task (or of a registry type)."""
    kind = task_or_type if isinstance(task_or_type, str) else task_or_type.type
    if kind not in TYPES:
        raise ConfigError(f"unknown task type '{kind}'; expected one of {list(TYPES)}")
    return FAMILIES[TYPES[kind]]


def head_name(task: Task) -> str:
    """Name of the head a task trains: its own, or the one shared by its type (named after the type)."""
    return task.type if family(task).model.shared_head else task.name


def load_registry(path: str | Path) -> dict[str, Task]:
    """Read a registry file and check each entry as its family reads it; returns tasks by name."""
    tasks = read_registry(path)
    for task in tasks.values():
        check_entry(task, f"{path}: {task.name}")
    return tasks


def check_entry(task: Task, where: str) -> None:
    """What the schema cannot say: the fields the task's family reads, and their counts."""
    def fail(field, message):
        raise ConfigError(f"{where}.{field}: {message}")

    kind, fam = task.type, family(task)
    if task.name in [t for t in TYPES if family(t).model.shared_head]:
        raise ConfigError(f"{where}: the name '{task.name}' is reserved for the head shared by all {task.name} tasks")
    fam.data.check_entry(task, fail)
    if fam.data.reads_choices != bool(task.choices):
        fail("choices", "required for multiple_choice tasks and only for them")
    if task.label_map is not None:
        if kind not in fam.data.label_maps:
            fail("label_map", f"only classification and multiple_choice labels can be mapped, not {kind}")
        bad = sorted({str(v) for v in task.label_map.values() if not 0 <= v < task.num_labels})
        if bad:
            fail("label_map", f"values {bad} out of range 0..{task.num_labels - 1}")
    if task.metric not in METRICS_BY_TYPE[kind]:
        fail("metric", f"'{task.metric}' is not a {kind} metric {METRICS_BY_TYPE[kind]}")
