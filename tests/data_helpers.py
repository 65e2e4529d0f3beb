"""Small local datasets for the tests: jsonl rows, registry entries and a registry file for the download step;
generated tasks tokenized for a tiny model built on their text, for training."""

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


# Three generated tasks (2-way, 3-way sentence pair, regression) for training tests (conftest.py's `generated`)
GENERATED = {
    "single": {"source": {"generator": {"seed": 1, "train": 120, "validation": 8}}, "type": "classification",
               "text": ["sentence"], "label": "label", "num_labels": 2, "metric": "accuracy"},
    "pair": {"source": {"generator": {"seed": 2, "pair": True, "train": 80, "validation": 8}},
             "type": "classification", "text": ["sentence1", "sentence2"], "label": "label", "num_labels": 3,
             "metric": "accuracy"},
    "score": {"source": {"generator": {"seed": 3, "train": 60, "validation": 8}}, "type": "regression",
              "text": ["sentence"], "label": "label", "num_labels": 1, "metric": "pearson"},
}
GENERATED_MAX_LENGTH = 32


def generated_inputs(root, registry: dict = GENERATED, max_length: int = GENERATED_MAX_LENGTH):
    """The registry's generated tasks downloaded, a tiny RoBERTa (2 layers) built on their text, and the tasks
    tokenized with it: (tasks, {name: tokenized folder}, model folder)."""
    from prefinetune.data import download, tokenize
    from prefinetune.models import fetch, texts_of

    (root / "tasks.yaml").write_text(yaml.safe_dump(registry))
    tasks = list(load_registry(root / "tasks.yaml").values())
    for task in tasks:
        download(task, root / "raw" / task.name)
    model = root / "model"
    fetch({"name": "tiny", "build": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                     "intermediate_size": 64, "vocab_size": 300}},
          model, texts=texts_of([root / "raw" / t.name for t in tasks]))
    tokenized = {}
    for task in tasks:
        tokenize(task, root / "raw" / task.name, model, root / "tok" / task.name, max_length)
        tokenized[task.name] = str(root / "tok" / task.name)
    return tasks, tokenized, model
