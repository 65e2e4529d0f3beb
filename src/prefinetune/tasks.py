"""The task registry: one YAML entry per dataset, read into plain :class:`Task` records.

An entry says where the data comes from (``source``), what kind of task it is, which columns hold the
text and the label, how many labels there are, the metric reported for it and which splits to use.
Adding a dataset to the experiment is adding one entry (docs/datasets.md).

Five task types in four families, as in Muppet (summarization comes with generation models):
  classification, regression   sentence or sentence pair; a head of its own per dataset
  multiple_choice              (context, choice) pairs, softmax over the choices; one head shared by all
  span                         (question, passage) windows, start/end over tokens; one head shared by all
  summarization                a document and its summary; the model's own decoder and LM head

This module reads and checks what the registry's schema can say; each task's family
(``prefinetune.families``, the layer above) checks the fields only it reads (``families.load_registry``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).parent / "schemas"

# The registry's task types and the family each belongs to (prefinetune.families: one module per family).
TYPES = {"classification": "classification", "regression": "classification", "multiple_choice": "multiple_choice",
         "span": "span", "summarization": "summarization"}


class ConfigError(ValueError):
    """A mistake in a user-edited file (config, registry, data). Its message is one line naming the field."""


@dataclass(frozen=True)
class Task:
    name: str
    type: str  # one of TYPES
    text: tuple[str, ...]  # sentence (pair); multiple_choice: the context column(s); span: (question, passage)
    label: str  # label column; multiple_choice: the answer; span: the answers; summarization: the summary
    num_labels: int  # classes; 1 for regression; multiple_choice: the most choices a row has; span, summarization: 0
    metric: str = ""  # the headline metric (read by evaluation only)
    source: dict = field(default_factory=dict, hash=False, compare=False)
    splits: dict = field(default_factory=lambda: {"train": "train", "validation": "validation"}, hash=False, compare=False)
    note: str = ""  # free text: no job reads it
    choices: tuple[str, ...] = ()  # multiple_choice: one list column (dotted path allowed) or one column per choice
    label_map: dict | None = field(default=None, hash=False, compare=False)  # raw label value -> index
    answer_format: str = "squad"  # span: "squad" ({text, answer_start}) or "mrqa" (detected_answers)
    size: dict | None = field(default=None, compare=False)  # rough sizes for the cost plan (plan.py)
    generation: dict | None = None  # summarization: beam-search settings (num_beams, min_length, max_length, ...)
    max_target_length: int | None = None  # summarization: summary tokens kept (the config's max_target_length)

    @property
    def family(self) -> str:
        return TYPES[self.type]


# What a job reads of its tasks, so exactly what its params hold (see params): the download step reads the data
# fields; tokenization also the summary length; training and evaluation every field but the note and the plan's size.
DATA_FIELDS = ("name", "type", "text", "label", "num_labels", "source", "splits", "choices", "label_map",
               "answer_format")
TOKENIZE_FIELDS = (*DATA_FIELDS, "max_target_length")
NOT_READ = ("note", "size")


def params(task: Task, fields: tuple[str, ...] | None = None) -> dict:
    """The task as a Snakemake param: plain data, keys sorted, fields that are None left out (so that a field
    added for one family reruns no job of the others). ``fields``: what the job reads (default: all it can)."""
    names = fields or [f.name for f in dataclasses.fields(Task) if f.name not in NOT_READ]
    values = {name: getattr(task, name) for name in names}
    return plain({name: value for name, value in values.items() if value is not None})


def from_params(values: dict) -> Task:
    """The Task of a job's params (fields left out keep their defaults)."""
    tuples = {key: tuple(values[key]) for key in ("text", "choices") if key in values}
    return Task(**{**values, **tuples})


def plain(value):
    """Nested dicts with sorted keys and lists for tuples: a stable form of a param (its repr is compared)."""
    if isinstance(value, dict):
        return {key: plain(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


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
    schema = yaml.load((SCHEMA_DIR / schema_name).read_text(), Loader=UniqueKeyLoader)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(schema_error_message(errors[0], where))


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden: not a duplicate
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in lines:
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice (first on line "
                                                            f"{lines[key] + 1})", key_node.start_mark)
                lines[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the constructor below says what is wrong
                continue
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path):
    """A user-edited YAML file; a syntax error or a key given twice stops with one line naming the file, line and
    column."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(str(error.problem or error.context or "invalid YAML").split())
        raise ConfigError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None


def read_registry(path: str | Path) -> dict[str, Task]:
    """Read a registry file and check it against its schema; returns tasks by name. Each task's family checks
    the rest (``families.load_registry``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"registry file not found: {path}")
    raw = read_yaml(path) or {}
    validate_with_schema(raw, "registry.schema.yaml", str(path))
    tasks = {}
    for name, entry in raw.items():
        if entry["type"] not in TYPES:
            raise ConfigError(f"{path}: {name}.type: '{entry['type']}' is not one of {list(TYPES)}")
        choices = entry.get("choices", ())
        tasks[name] = Task(
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
    return tasks
