"""The task registry: one YAML entry per dataset, read into :class:`Task` records.

An entry says where the data comes from (``source``), what kind of task it is, which columns hold the
text and the label, how many labels there are, the metric reported for it and which splits to use.
Adding a dataset to the experiment is adding one entry (see README, "Adding a dataset").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).parent / "schemas"


class ConfigError(ValueError):
    """A mistake in a user-edited file (config, registry, data). Its message is one line naming the field."""


@dataclass(frozen=True)
class Task:
    name: str
    type: str  # "classification" or "regression"
    text: tuple[str, ...]  # one column (single sentence) or two (sentence pair)
    label: str
    num_labels: int  # 1 for regression
    metric: str
    source: dict = field(hash=False, compare=False)
    splits: dict = field(default_factory=lambda: {"train": "train", "validation": "validation"}, hash=False, compare=False)
    note: str = ""

    @property
    def loss_scale(self) -> float:
        """Muppet's per-example loss multiplier 1 / log(n): a uniform prediction then has loss 1 on every task.

        Regression has no output space to normalise by and is left unscaled.
        """
        if self.type == "regression":
            return 1.0
        return 1.0 / math.log(self.num_labels)


def schema_error_message(error: jsonschema.ValidationError, where: str) -> str:
    """One line naming the offending field, e.g. ``config.yaml: draws: -1 is less than the minimum of 1``."""
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {path}: {error.message}"


def validate_with_schema(data, schema_name: str, where: str) -> None:
    schema = yaml.safe_load((SCHEMA_DIR / schema_name).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(schema_error_message(errors[0], where))


def load_registry(path: str | Path) -> dict[str, Task]:
    """Read and validate a registry file; returns tasks by name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"registry file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    validate_with_schema(raw, "registry.schema.yaml", str(path))
    tasks = {}
    for name, entry in raw.items():
        task = Task(
            name=name,
            type=entry["type"],
            text=tuple(entry["text"]),
            label=entry["label"],
            num_labels=entry["num_labels"],
            metric=entry["metric"],
            source=entry["source"],
            splits={"train": "train", "validation": "validation", **entry.get("splits", {})},
            note=entry.get("note", ""),
        )
        if (task.type == "regression") != (task.num_labels == 1):
            raise ConfigError(f"{path}: {name}.num_labels: regression tasks have 1, classification tasks at least 2")
        if task.metric not in _metrics_for(task.type):
            raise ConfigError(f"{path}: {name}.metric: '{task.metric}' is not a {task.type} metric {_metrics_for(task.type)}")
        tasks[name] = task
    return tasks


def _metrics_for(task_type: str) -> tuple[str, ...]:
    from .evaluation import METRICS_BY_TYPE

    return METRICS_BY_TYPE[task_type]
