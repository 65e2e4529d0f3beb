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
    # counted from the safetensors header, as many as the loaded encoder has
    assert plan.model_parameters(tmp_path / "model") == sum(p.numel() for p in load_encoder(tmp_path / "model").parameters())


def test_parameters_are_counted_from_the_saved_header_as_torch_counts_them(tmp_path):
    """RoBERTa and BART as download_model saves them; BART's saved final_logits_bias buffer (one per vocabulary
    entry) is the only tensor counted that is not a parameter. A folder without weights names the file."""
    texts = [f"a few words of text number {i}" for i in range(50)]
    for arch in ("roberta", "bart"):
        fetch({"name": arch, "build": {"architecture": arch, "hidden_size": 16, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 300}},
              tmp_path / arch, texts=texts)
        model = load_encoder(tmp_path / arch)
        buffers = model.final_logits_bias.numel() if arch == "bart" else 0
        assert plan.model_parameters(tmp_path / arch) == sum(p.numel() for p in model.parameters()) + buffers
    (tmp_path / "empty").mkdir()
    with pytest.raises(plan.ConfigError, match="empty/model.safetensors: no such file"):
        plan.model_parameters(tmp_path / "empty")


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


# -- what each job asks Slurm for --------------------------------------------------------------------------------
SIZING = {"runtime_safety": 2.0, "runtime_floor": "15m"}


def test_a_job_asks_for_its_estimate_times_the_safety_factor_between_the_floor_and_its_runtime():
    assert plan.asked_minutes(1.0, "4h", SIZING) == 2 * 60 + 5  # x 2, + the 5-minute warning
    assert plan.asked_minutes(0.5, "4h", {**SIZING, "runtime_safety": 1.5}) == 45 + 5
    assert plan.asked_minutes(0.01, "4h", SIZING) == 15  # 1.2 min x 2 + 5 < the floor
    assert plan.asked_minutes(3.0, "4h", SIZING) == 240  # 6 h 5 min > the rule's runtime: the runtime
    assert plan.asked_minutes(None, "4h", SIZING) == 240  # no estimate yet (the model's size unknown)
    assert plan.asked_minutes(0.01, "10m", SIZING) == 10  # a floor above the runtime: the runtime
    assert plan.asked_minutes(1 / 60, "1d", {**SIZING, "runtime_floor": "30s"}) == 7  # 2 + 5, whole minutes
    assert [plan.minutes_text(m) for m in (7, 60, 125, 1440)] == ["7m", "1h", "2h05m", "24h"]


def test_jobs_of_an_array_rule_ask_for_the_rules_longest_and_prefinetuning_for_its_own():
    """An array has one time limit (the plugin takes its first task's): every job of a rule submitted as arrays
    asks for what its longest job needs; pre-finetuning jobs, submitted one by one, ask for their own."""
    sizes = {"short": plan.TaskSize(360, 360 * 100, False), "long": plan.TaskSize(3600, 3600 * 1000, False)}
    fine = {"part": "curve", "rule": "finetune", "percent": 100, "settings": {"epochs": 1, "batch_size": 1},
            "runtime": "4h", "gpus": 1}
    pre = {"part": "curve", "rule": "prefinetune", "percent": 100, "runtime": "24h", "gpus": 1,
           "settings": {**DEFAULT_TRAIN, "max_steps": 360, "batch_size": 10}}
    jobs = [{**fine, "label": t, "output": t, "tasks": [t]} for t in sizes]
    jobs += [{**pre, "label": f"k={k}", "output": f"pre{k}", "tasks": tasks}
             for k, tasks in ((1, ["short"]), (2, ["short", "long"]))]
    rows = {r["output"]: r for r in plan.estimate(jobs, sizes, rate=200.0, plan=SIZING)}
    assert rows["short"]["hours"] == pytest.approx(0.05) and rows["long"]["hours"] == pytest.approx(5.0)
    assert rows["short"]["asks_minutes"] == rows["long"]["asks_minutes"] == 240  # 10 h 5 min, at most 4h
    assert rows["pre1"]["hours"] == pytest.approx(0.5) and rows["pre1"]["asks"] == "1h05m"
    mixed = 3600 * (360 * 100 + 3600 * 1000) / 3960 / 200 / 3600  # 3,600 items in natural proportions: 4.6 h
    assert rows["pre2"]["hours"] == pytest.approx(mixed) and rows["pre2"]["asks_minutes"] == math.ceil(mixed * 120 + 5)
    summary = {(r["part"], r["rule"]): r for r in plan.summarize(list(rows.values()))}
    assert summary[("curve", "finetune")]["asks"] == "4h"
    assert summary[("curve", "prefinetune")]["asks"] == f"1h05m-{rows['pre2']['asks']}" == "1h05m-9h16m"
    assert summary[("total", "all rules")]["asked_gpu_hours"] == pytest.approx(4 + 4 + (65 + 556) / 60)


def test_the_slurm_profile_submits_exactly_the_array_rules_as_arrays():
    """slurm/config.yaml's slurm-array-jobs and prefinetune.plan.ARRAY_RULES (the rules whose jobs all ask for
    their longest job's runtime) are the same list; each has its partition and the advance warning; the submission
    rate lets a wave of `jobs` ready jobs go at once (in as few arrays as possible)."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    arrays = [r.strip() for r in profile["slurm-array-jobs"].split(",")]
    assert sorted(arrays) == sorted(plan.ARRAY_RULES)
    for rule in arrays:
        assert profile["set-resources"][rule]["slurm_extra"] == "'--signal=TERM@300'", rule
        assert "slurm_partition" in profile["set-resources"][rule], rule
    assert "prefinetune" not in arrays
    assert profile["slurm-disable-memory-fudge"] is True  # --mem is the config's mem_mb
    assert int(profile["max-jobs-per-timespan"].split("/")[0]) >= profile["jobs"]


def test_requests_price_each_job_on_its_model_and_turn_exact_once_the_data_is_tokenized(tmp_path):
    """Requests (what the rules' runtime resource reads) from a Pricer: rough sizes until a task's tokenized data
    exists, then its real token count; a reference model priced on its own folder; a retry asks for twice as
    long, at most the runtime."""
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(REGISTRY))
    tasks = load_registry(tmp_path / "tasks.yaml")
    registry = {n: {"type": t.type, "num_labels": t.num_labels, "size": t.size, "source": t.source} for n, t in tasks.items()}
    tokenized = {"main": {n: str(tmp_path / "tok" / n) for n in tasks}, "ref": {"single": str(tmp_path / "rtok")}}
    models = {"main": str(tmp_path / "model"), "ref": str(tmp_path / "ref")}
    throughput = {"tokens_per_s": None, "gpu": "a100", "precision": "bf16", "mfu": 1e-6, "model_params": 10**6,
                  "runtime_safety": 2.0, "runtime_floor": "6m"}
    pricer = plan.Pricer(registry, tokenized, models, throughput, max_length=32, doc_stride=8)
    fine = {"part": "curve", "rule": "finetune_baseline", "percent": 100, "runtime": "4h", "gpus": 1,
            "settings": {"epochs": 1, "batch_size": 10}}
    jobs = [{**fine, "label": "single", "output": "a", "tasks": ["single"]},
            {**fine, "rule": "finetune_reference", "part": "reference", "label": "single", "output": "r",
             "tasks": ["single"], "model": "ref"}]
    requests = plan.Requests(jobs, pricer)
    rate = 1e-6 * 312e12 / (6 * 10**6)  # 52 tokens/s: 50 rows of max_length 32 (rough) take 30.8 s
    rough = plan.asked_minutes(50 * 32 / rate / 3600, "4h", throughput)
    assert requests.minutes("a") == requests.minutes("r") == rough == 7  # 1 min x 2 + 5
    assert requests.minutes("a", attempt=2) == 14 and requests.minutes("a", attempt=9) == 240
    download(tasks["single"], tmp_path / "raw")
    fetch({"name": "tiny", "build": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 32, "vocab_size": 300}},
          tmp_path / "model", texts=texts_of([tmp_path / "raw"]))
    tokenize(tasks["single"], tmp_path / "raw", tmp_path / "model", tmp_path / "tok" / "single", 32)
    exact = plan.exact_size(tmp_path / "tok" / "single")
    assert exact.tokens < 50 * 32  # real rows are shorter than max_length
    main_rate = plan.tokens_per_second(throughput, plan.model_parameters(tmp_path / "model"))[0]
    assert requests.minutes("a") == plan.asked_minutes(exact.tokens / main_rate / 3600, "4h", throughput)
    assert requests.minutes("r") == rough  # the reference model: its own data and folder do not exist yet
