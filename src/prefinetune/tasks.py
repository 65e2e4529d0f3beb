"""The task registry: one YAML entry per dataset, read into :class:`Task` records.

An entry says where the data comes from (``source``), what kind of task it is, which columns hold the
text and the label, how many labels there are, the metric reported for it and which splits to use.
Adding a dataset to the experiment is adding one entry (see README, "Adding a dataset").

Four task types in three families, as in Muppet (summarization comes with generation models):
  classification, regression   sentence or sentence pair; a head of its own per dataset
  multiple_choice              (context, choice) pairs, softmax over the choices; one head shared by all
  span                         (question, passage) windows, start/end over tokens; one head shared by all
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).parent / "schemas"


class ConfigError(ValueError):
    """A mistake in a user-edited file (config, registry, data). Its message is one line naming the field."""




LATER_FIELDS = ("generation", "max_target_length")


@dataclass(frozen=True, repr=False)
class Task:
    name: str
    type: str  # one of families.TYPES
    text: tuple[str, ...]  # sentence (pair); multiple_choice: the context column(s); span: (question, passage)
    label: str  # label column; multiple_choice: the answer; span: the answers
    num_labels: int  # classes; 1 for regression; multiple_choice: the most choices a row has; span: 0 (unused)
    metric: str
    source: dict = field(hash=False, compare=False)
    splits: dict = field(default_factory=lambda: {"train": "train", "validation": "validation"}, hash=False, compare=False)
    note: str = field(default="", repr=False)  # not in the repr, which Snakemake compares as a param: no result
    choices: tuple[str, ...] = ()  # multiple_choice: one list column (dotted path allowed) or one column per choice
    label_map: dict | None = field(default=None, hash=False, compare=False)  # raw label value -> index
    answer_format: str = "squad"  # span: "squad" ({text, answer_start}) or "mrqa" (detected_answers)
    size: dict | None = field(default=None, repr=False, compare=False)  # rough sizes for the cost plan (plan.py)
    generation: dict | None = None  # summarization: beam-search settings (num_beams, min_length, max_length, ...)
    max_target_length: int | None = None  # summarization: summary tokens kept (the config's max_target_length)

    def __repr__(self) -> str:
        """As a dataclass's, but fields added for one family (summarization's) are shown only when set: the repr
        is a Snakemake param, and a new field must not rerun every finished job of the other families."""
        shown = [f for f in fields(self) if f.repr and not (f.name in LATER_FIELDS and getattr(self, f.name) is None)]
        return f"Task({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

    @property
    def family(self) -> str:
        from .families import family

        return family(self).name

    @property
    def head(self) -> str:
        """Name of the head this task trains: its own, or the one shared by its type."""
        from .families import family

        return self.type if family(self).shared_head else self.name

    @property
    def loss_scale(self) -> float:
        """Muppet's per-example loss multiplier 1 / log(n): a uniform prediction then has loss 1 on every task.

        Regression has no output space to normalise by and is left unscaled. For multiple choice and span
        extraction n varies per example (its number of choices, its window's number of tokens); the model
        scales those per example with :func:`log_scale`, and this is the value for ``num_labels`` choices.
        """
        if self.type in ("regression", "span"):
            return 1.0
        return log_scale(self.num_labels)


def log_scale(n):
    """1 / log(n) for a number (or a tensor) of possible outputs n >= 2."""
    return 1.0 / (math.log(n) if isinstance(n, (int, float)) else n.log())


def schema_error_message(error: jsonschema.ValidationError, where) -> str:
    """One line naming the offending field, e.g. ``config.yaml: draws: -1 is less than the minimum of 1``.

    ``where`` is a file name, or a function of the field's path giving the file the value came from.
    """
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "(top level)"
    source = where(tuple(error.absolute_path)) if callable(where) else where
    return f"{source}: {path}: {_explain(error)}"


def _explain(error: jsonschema.ValidationError) -> str:
    """The schema's message, or a clearer one for the two type mistakes YAML makes easy."""
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    value = error.instance
    if error.validator != "type" or not {"integer", "number"} & set(expected):
        return error.message
    if isinstance(value, float) and "integer" in expected:
        if value.is_integer():
            return f"{value!r} is a float where a whole number belongs; write {int(value)}"
        return f"{value!r} is not a whole number"
    if isinstance(value, str) and _as_number(value) is not None:
        return (f"{value!r} is text, not a number (YAML reads {value} as a string); "
                f"write {_yaml_number(value)}")
    return error.message


def _as_number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _yaml_number(text: str) -> str:
    """How to write a number so that YAML reads it as one: 2e-3 -> 2.0e-3 (a dot and a signed exponent)."""
    mantissa, e, exponent = text.lower().partition("e")
    if not e:
        return repr(float(text))
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[:1] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}"


# The JSON schema counts 2.0 as an integer; here an integer must be written as one (draws: 2, not 2.0).
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def validate_with_schema(data, schema_name: str, where) -> None:
    schema = yaml.safe_load((SCHEMA_DIR / schema_name).read_text())
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(schema_error_message(errors[0], where))


def read_yaml(path: str | Path):
    """A user-edited YAML file; a syntax error stops with one line naming the file, line and column."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(str(error.problem or error.context or "invalid YAML").split())
        raise ConfigError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None


def load_registry(path: str | Path) -> dict[str, Task]:
    """Read and validate a registry file; returns tasks by name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"registry file not found: {path}")
    raw = read_yaml(path) or {}
    validate_with_schema(raw, "registry.schema.yaml", str(path))
    tasks = {}
    for name, entry in raw.items():
        choices = entry.get("choices", ())
        task = Task(
            name=name,
            type=entry["type"],
            text=tuple(entry["text"]),
            label=entry["label"],
            num_labels=entry.get("num_labels", 0),
            metric=entry["metric"],
            source=entry["source"],
            splits={"train": "train", "validation": "validation", **entry.get("splits", {})},
            note=entry.get("note", ""),
            choices=(choices,) if isinstance(choices, str) else tuple(choices),
            label_map=entry.get("label_map"),
            answer_format=entry.get("answer_format", "squad"),
            size=entry.get("size"),
            generation=entry.get("generation"),
        )
        _check_entry(task, f"{path}: {name}")
        tasks[name] = task
    return tasks


def _check_entry(task: Task, where: str) -> None:
    """What the schema cannot say: the type, the fields its family reads, and their counts."""
    from .families import FAMILIES, TYPES, family

    def fail(field, message):
        raise ConfigError(f"{where}.{field}: {message}")

    kind = task.type
    if kind not in TYPES:
        fail("type", f"'{kind}' is not one of {list(TYPES)}")
    if task.name in [k for k, f in FAMILIES.items() if f.shared_head]:
        raise ConfigError(f"{where}: the name '{task.name}' is reserved for the head shared by all {task.name} tasks")
    fam = family(task)
    fam.check_entry(task, fail)
    if fam.reads_choices != bool(task.choices):
        fail("choices", "required for multiple_choice tasks and only for them")
    if task.label_map is not None:
        if kind not in fam.label_maps:
            fail("label_map", f"only classification and multiple_choice labels can be mapped, not {kind}")
        bad = sorted({str(v) for v in task.label_map.values() if not 0 <= v < task.num_labels})
        if bad:
            fail("label_map", f"values {bad} out of range 0..{task.num_labels - 1}")
    if task.metric not in fam.metrics[kind]:
        fail("metric", f"'{task.metric}' is not a {kind} metric {fam.metrics[kind]}")
