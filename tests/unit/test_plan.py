"""The cost plan's parts: task sizes (rough from the registry, exact from tokenized data), the work of a job,
the throughput, and the registry's sizes. The plan as a command is tested in test_dag.py (config.yaml, nothing
downloaded) and test_demo_end_to_end.py (the finished embedded default, exact counts)."""

from __future__ import annotations

import math
import re

import pytest
import yaml

from prefinetune import plan
from prefinetune.config import DEFAULT_TRAIN, finetune_steps
from prefinetune.data import download, load_tokenized, tokenize
from prefinetune.families import load_registry
from prefinetune.models import fetch, texts_of
from prefinetune.training import load_encoder
from workflow_helpers import REPO

REGISTRY = {
    "single": {"source": {"generator": {"seed": 1, "train": 50, "validation": 8}}, "type": "classification",
               "text": ["sentence"], "label": "label", "num_labels": 2, "metric": "accuracy"},
    "choice": {"source": {"generator": {"seed": 31, "choices": [2, 3], "train": 40, "validation": 8}},
           "type": "multiple_choice", "text": ["context"], "choices": "choices", "label": "label", "num_labels": 3,
           "metric": "accuracy"},
    "passages": {"source": {"generator": {"seed": 41, "span_length": 2, "train": 30, "validation": 8}}, "type": "span",
             "text": ["question", "context"], "label": "answers", "metric": "f1"},
}


def test_rough_sizes_follow_the_registry():
    # classification: rows truncated to max_length
    assert plan.rough_size("a", {"type": "classification", "num_labels": 2, "size": {"train": 10, "tokens": 300}, "source": {}},
                           128, 32) == plan.TaskSize(10, 10 * 128, False)
    # multiple choice: one row per choice
    assert plan.rough_size("b", {"type": "multiple_choice", "num_labels": 4, "size": {"train": 10, "tokens": 50}, "source": {}},
                           128, 32) == plan.TaskSize(10, 10 * 4 * 50, False)
    # span: 300 tokens at 128 per window with a stride of 32 -> 1 + ceil(172 / 96) = 3 windows per example
    assert plan.rough_size("c", {"type": "span", "num_labels": 0, "size": {"train": 10, "tokens": 300}, "source": {}},
                           128, 32) == plan.TaskSize(30, 10 * 3 * 128, False)
    # a generated task without a size: its generator's count, rows of max_length at most
    generated = {"type": "classification", "num_labels": 2, "size": None, "source": {"generator": {"train": 7}}}
    assert plan.rough_size("g", generated, 64, 16) == plan.TaskSize(7, 7 * 64, False)
    with pytest.raises(ValueError, match="d: no size in the registry"):
        plan.rough_size("d", {"type": "span", "num_labels": 0, "size": None, "source": {"hub": "x"}}, 128, 32)


def test_exact_size_counts_every_real_token(tmp_path):
    """Rows and tokens counted in Arrow equal a row-by-row count (every choice of a multiple-choice example)."""
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(REGISTRY))
    tasks = load_registry(tmp_path / "tasks.yaml")
    for t in tasks.values():
        download(t, tmp_path / "raw" / t.name)
    fetch({"name": "tiny", "build": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 32, "vocab_size": 300}},
          tmp_path / "model", texts=texts_of([tmp_path / "raw" / t for t in tasks]))
    for name, t in tasks.items():
        tokenize(t, tmp_path / "raw" / name, tmp_path / "model", tmp_path / "tok" / name, 32, doc_stride=8)
        rows = load_tokenized(tmp_path / "tok" / name, "train")["input_ids"]
        flat = [r for choices in rows for r in choices] if name == "choice" else rows
        assert plan.exact_size(tmp_path / "tok" / name) == plan.TaskSize(len(rows), sum(map(len, flat)), True)
        if name == "passages":
            assert len(rows) > 30  # passages longer than one 32-token window: the windows are counted
    # counted on the meta device from config.json, as many as the loaded encoder has
    assert plan.model_parameters(tmp_path / "model") == sum(p.numel() for p in load_encoder(tmp_path / "model").parameters())


def test_work_of_a_job():
    sizes = {"a": plan.TaskSize(100, 100 * 10, True), "b": plan.TaskSize(300, 300 * 50, True)}
    pre = {"rule": "prefinetune", "tasks": ["a", "b"],
           "settings": {**DEFAULT_TRAIN, "max_steps": 10, "batch_size": 8, "grad_accum": 2}}
    items, tokens = plan.job_work(pre, sizes)
    assert items == 160 and tokens == pytest.approx(160 * (0.25 * 10 + 0.75 * 50))  # natural proportions
    capped = {**pre, "settings": {**pre["settings"], "cap": 100}}  # equal mixing
    assert plan.job_work(capped, sizes)[1] == pytest.approx(160 * 30)

    fine = {"rule": "finetune", "tasks": ["b"], "percent": 100, "settings": {"epochs": 3, "batch_size": 16}}
    assert plan.job_work(fine, sizes) == (math.ceil(900 / 16) * 16, pytest.approx(math.ceil(900 / 16) * 16 * 50))
    assert plan.job_work({**fine, "percent": 50}, sizes)[0] == math.ceil(450 / 16) * 16
    fine["settings"]["max_steps"] = 5  # a cap on updates, as the run itself applies it
    assert plan.job_work(fine, sizes)[0] == 5 * 16 == finetune_steps(fine["settings"], 300) * 16


def test_throughput_and_runtime():
    rate, text = plan.tokens_per_second({"tokens_per_s": 5000.0}, 10)
    assert rate == 5000.0 and "measured" in text
    rate, text = plan.tokens_per_second({"tokens_per_s": None, "gpu": "a100", "precision": "bf16", "mfu": 0.5}, 10**8)
    assert rate == pytest.approx(0.5 * 312e12 / 6e8) and "assumed" in text and "not measured" in text
    with pytest.raises(ValueError, match="plan.gpu"):
        plan.tokens_per_second({"tokens_per_s": None, "gpu": "v100", "precision": "tf32", "mfu": 0.5}, 10)

    job = {"part": "curve", "rule": "finetune", "label": "t", "output": "o", "tasks": ["t"], "percent": 100,
           "settings": {"epochs": 1, "batch_size": 1}, "runtime": "1h", "gpus": 1}
    sizes = {"t": plan.TaskSize(3600, 3600 * 100, False)}
    fits, = plan.estimate([job], sizes, rate=200.0)  # 360,000 tokens at 200/s: 0.5 h
    assert fits["hours"] == pytest.approx(0.5) and fits["fits"] and fits["basis"] == "rough"
    over, = plan.estimate([{**job, "runtime": "20m"}], sizes, rate=200.0)
    assert not over["fits"] and over["needs"] == "1h" and over["attempts"] == 2  # 15 min of training per attempt
    halved, = plan.estimate([{**job, "gpus": 2}], sizes, rate=200.0)
    assert halved["hours"] == pytest.approx(0.25) and halved["gpu_hours"] == pytest.approx(0.5)
    summary = plan.summarize([fits, over])
    total = [r for r in summary if r["part"] == "total"][0]
    assert total["jobs"] == 2 and total["jobs_over_runtime"] == 1 and total["gpu_hours"] == pytest.approx(1.0)
    assert "finetune t: 1 job(s)" in plan.over_runtime([fits, over])[0]


def test_every_registry_task_states_its_size_as_its_note_does():
    raw = yaml.safe_load((REPO / "tasks.yaml").read_text())
    assert len(raw) == 43
    for name, entry in raw.items():
        train, validation = re.search(r"([\d,]+) train\w* / ([\d,]+) ", entry["note"]).groups()
        assert entry["size"]["train"] == int(train.replace(",", "")), name
        assert entry["size"]["validation"] == int(validation.replace(",", "")), name
        assert entry["size"]["tokens"] > 0


def test_each_pre_finetuning_budget_is_priced():
    """Fixed updates cost the same at every k; passes scale with the subset; convergence is priced at its cap
    with its validation losses (forward passes: a third of their tokens); the bill lists the three choices and
    the passes over the subset that each k makes under the configured budget."""
    sizes = {"a": plan.TaskSize(1000, 1000 * 10, True), "b": plan.TaskSize(3000, 3000 * 10, True)}
    base = {"rule": "prefinetune", "part": "curve", "settings": {**DEFAULT_TRAIN, "max_steps": 100, "batch_size": 8,
                                                               "grad_accum": 2}}
    small, large = {**base, "label": "k=1", "tasks": ["a"]}, {**base, "label": "k=2", "tasks": ["a", "b"]}
    assert plan.job_work(small, sizes)[0] == plan.job_work(large, sizes)[0] == 1600  # updates: 100 x 16
    passes = {"budget": "passes", "passes": 0.8}
    assert plan.job_work({**small, "settings": {**base["settings"], **passes}}, sizes)[0] == 50 * 16  # 0.8 x 1000
    assert plan.job_work({**large, "settings": {**base["settings"], **passes}}, sizes)[0] == 100 * 16  # capped
    converge = {**large, "settings": {**base["settings"], "budget": "convergence", "eval_every": 25,
                                      "eval_examples": 200}}
    items, tokens = plan.job_work(converge, sizes)
    assert items == 1600 and tokens == pytest.approx(1600 * 10 + (100 // 25 + 1) * 400 * 10 / 3)
    lines = plan.budget_lines([small, large], sizes, rate=1.0)
    assert lines[1].lstrip().startswith("* updates") and "passes" in lines[2] and "convergence" in lines[3]
    assert lines[-1].endswith("k=1 1.6, k=2 0.4")  # 1,600 items over 1,000 and over 4,000
