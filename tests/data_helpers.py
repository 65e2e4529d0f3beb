"""Small local datasets for the tests of the download step: jsonl rows, registry entries and a registry file."""

import json

import yaml

from prefinetune.families import load_registry


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def sentences(n, labels=(0, 1)):
    return [{"sentence": f"word{i} other{i % 3}", "label": labels[i % len(labels)]} for i in range(n)]


CLASSIFICATION = {"type": "classification", "text": ["sentence"], "label": "label", "num_labels": 2, "metric": "accuracy"}
MULTIPLE_CHOICE = {"type": "multiple_choice", "text": ["goal"], "choices": ["sol1", "sol2"], "label": "label",
                   "num_labels": 2, "metric": "accuracy"}
SPAN = {"type": "span", "text": ["question", "context"], "label": "answers", "metric": "f1"}
CHOICE_ROW = {"goal": "open a door", "sol1": "push it", "sol2": "eat it", "label": 0}
SPAN_ROW = {"question": "who?", "context": "Ann met Bob.", "answers": {"text": ["Ann"], "answer_start": [0]}}


def local_task(tmp_path, train: bytes, validation: bytes, entry=CLASSIFICATION, name="t"):
    """A task whose splits are local jsonl files data/train.jsonl and data/validation.jsonl."""
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "train.jsonl").write_bytes(train)
    (tmp_path / "data" / "validation.jsonl").write_bytes(validation)
    files = {"train": "data/train.jsonl", "validation": "data/validation.jsonl"}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({name: {"source": {"files": files}, **entry}}))
    return load_registry(tmp_path / "tasks.yaml")[name]
