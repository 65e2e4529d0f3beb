"""The generation half: a tiny BART trained on all four families at once, summarization's loss, generation,
ROUGE, saving, and summarization data through the real download / tokenize / train / evaluate path."""

from __future__ import annotations

import dataclasses
import json
import math

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from rouge_score import rouge_scorer
from transformers import AutoModelForSeq2SeqLM

from prefinetune.batching import collate, task_arrays
from prefinetune.data import download, load_tokenized, tokenize
from prefinetune.families import load_registry
from prefinetune.heads import IGNORE_INDEX, MultiTaskModel, example_losses
from prefinetune.metrics import rouge
from prefinetune.models import fetch, texts_of
from prefinetune.stages import finetune, prefinetune
from prefinetune.synthetic import generate_summaries
from prefinetune.tasks import ConfigError
from prefinetune.training import load_encoder, save_model

DEMO_TASKS = ["syn_01", "syn_05", "syn_mc_1", "syn_span_1", "syn_sum_1"]  # classification, regression, mc, span, sum
TINY_BART = {"architecture": "bart", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64, "vocab_size": 500, "seed": 0}


pytestmark = pytest.mark.usefixtures("isolated_hf")


def demo_task(name, **changes):
    from workflow_helpers import REPO

    task = load_registry(REPO / "demo" / "tasks.yaml")[name]
    if task.type == "summarization":
        changes = {"max_target_length": 32, **changes}
    return dataclasses.replace(task, **changes)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The demo's generated tasks of every family (small), downloaded, a tiny BART built on their text, tokenized."""
    root = tmp_path_factory.mktemp("bart")
    tasks = [demo_task(n) for n in DEMO_TASKS]
    tasks = [dataclasses.replace(t, source={"generator": {**t.source["generator"], "train": 96, "validation": 24}})
             for t in tasks]
    for t in tasks:
        download(t, root / "raw" / t.name)
    fetch({"name": "tiny-bart", "build": TINY_BART}, root / "model", texts=texts_of([root / "raw" / t.name for t in tasks]))
    for t in tasks:
        tokenize(t, root / "raw" / t.name, root / "model", root / "tok" / t.name, 48, doc_stride=16)
    return root, {t.name: t for t in tasks}


def tiny_model(root, tasks, seed=0):
    torch.manual_seed(seed)
    return MultiTaskModel(load_encoder(root / "model"), list(tasks.values()), dropout=0.0)


# -- the loss ----------------------------------------------------------------------------------------------------
def test_uniform_prediction_over_the_vocabulary_costs_exactly_one():
    task = demo_task("syn_sum_1")
    vocabulary = 777
    labels = torch.tensor([[5, 9, 3, IGNORE_INDEX], [4, 4, 4, 4]])
    uniform = torch.zeros(2, 6, vocabulary)  # decoder states may be longer than the summary
    for smoothing in (0.0, 0.1):
        scaled = example_losses(task, uniform, labels, scale=True, smoothing=smoothing)
        assert torch.allclose(scaled, torch.ones(2), atol=1e-6)
        raw = example_losses(task, uniform, labels, scale=False, smoothing=smoothing)
        assert torch.allclose(raw, torch.full((2,), math.log(vocabulary)), atol=1e-5)


def test_label_smoothing_is_applied_as_configured():
    task = demo_task("syn_sum_1")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 50, generator=g)
    labels = torch.tensor([[1, 2, 3, IGNORE_INDEX, IGNORE_INDEX], [7, 8, 9, 10, 11]])
    logp = logits.log_softmax(-1)
    for eps in (0.0, 0.1, 0.3):
        got = example_losses(task, logits, labels, scale=False, smoothing=eps)
        for row in range(2):  # (1 - eps) * NLL of the gold token + eps * mean NLL over the vocabulary, per token
            tokens = [(t, y) for t, y in enumerate(labels[row].tolist()) if y != IGNORE_INDEX]
            per_token = [-(1 - eps) * logp[row, t, y] - eps * logp[row, t].mean() for t, y in tokens]
            assert got[row].item() == pytest.approx(torch.stack(per_token).mean().item(), rel=1e-5)
    assert not torch.allclose(example_losses(task, logits, labels, False, smoothing=0.0),
                              example_losses(task, logits, labels, False, smoothing=0.1))


# -- one micro-batch of all four families ------------------------------------------------------------------------
def test_mixed_micro_batch_is_one_encoder_decoder_pass_whose_loss_is_the_mean_of_each_familys(pool):
    root, tasks = pool
    model = tiny_model(root, tasks).eval()
    arrays = task_arrays({name: load_tokenized(root / "tok" / name, "train") for name in tasks})
    pad = model.encoder.config.pad_token_id
    per_task = {name: [(name, i) for i in range(3)] for name in tasks}
    passes = []
    hook = model.encoder.model.register_forward_hook(lambda *_: passes.append(1))
    with torch.no_grad():
        mixed, outputs = model(**collate(arrays, [item for items in per_task.values() for item in items], pad))
        assert len(passes) == 1
        separate = [model(**collate(arrays, items, pad))[0] for items in per_task.values()]
    hook.remove()
    assert outputs["syn_sum_1"].shape[-1] == model.encoder.config.vocab_size  # BART's own LM head
    assert set(model.heads) == {"syn_01", "syn_05", "multiple_choice", "span"}  # summarization adds none
    # each task has 3 examples, so the mean over examples is the mean of the per-task means
    assert mixed.item() == pytest.approx(torch.stack(separate).mean().item(), rel=1e-4)


def test_teacher_forcing_feeds_the_summary_shifted_right(pool):
    root, tasks = pool
    model = tiny_model(root, tasks)
    arrays = task_arrays({n: load_tokenized(root / "tok" / n, "train") for n in ("syn_01", "syn_sum_1")})
    batch = collate(arrays, [("syn_01", 0), ("syn_sum_1", 0)], model.encoder.config.pad_token_id)
    decoder = model.decoder_inputs(batch["input_ids"], batch["segments"])
    summary = load_tokenized(root / "tok" / "syn_sum_1", "train")[0]["labels"]
    start = model.encoder.config.decoder_start_token_id
    assert decoder[1, : len(summary)].tolist() == [start, *summary[:-1]]
    n = int(batch["attention_mask"][0].sum())
    assert decoder[0, :n].tolist() == [start, *batch["input_ids"][0, : n - 1].tolist()]


# -- generation and ROUGE ----------------------------------------------------------------------------------------
def test_generation_is_deterministic_for_a_seed(pool):
    from prefinetune.evaluation import generate

    root, tasks = pool
    ds = load_tokenized(root / "tok" / "syn_sum_1", "validation")
    settings = {"num_beams": 3, "min_length": 2, "max_length": 20}
    runs = [list(generate(tiny_model(root, tasks, seed=1), ds, tasks["syn_sum_1"], 1, 8, "fp32", settings))
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == len(ds)
    assert all(len(ids) <= 20 for ids in runs[0])


PAIRS = [  # (generated, reference): stemming (cats / cat, running / run), order, sentences, no overlap
    ("The cats were running in the park. They slept.", "A cat runs in the park.\nIt slept there."),
    ("police arrested two men on friday", "two men were arrested by police"),
    ("completely unrelated words", "nothing in common here"),
]


def test_rouge_equals_rouge_score_with_stemming():
    from prefinetune.evaluation import compute_metrics
    from prefinetune.families.summarization import sentences

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = {name: 0.0 for name in ("rouge1", "rouge2", "rougeL")}
    lsum = 0.0
    for generated, reference in PAIRS:
        scores = scorer.score(reference, generated)
        for name in expected:
            expected[name] += scores[name].fmeasure / len(PAIRS)
        lsum += scorer.score(sentences(reference), sentences(generated))["rougeLsum"].fmeasure / len(PAIRS)
    got = compute_metrics("summarization", [g for g, _ in PAIRS], [r for _, r in PAIRS])
    assert got == pytest.approx({**expected, "rougeLsum": lsum}, rel=1e-12)
    assert got["rouge1"] > rouge([g for g, _ in PAIRS], [r for _, r in PAIRS], None, None)["rouge2"] > 0
    assert sentences(PAIRS[0][0]) == "The cats were running in the park.\nThey slept."
    # without stemming "cats" / "cat" and "running" / "runs" would not match: the stemmer is on
    plain = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(PAIRS[0][1], PAIRS[0][0])["rouge1"].fmeasure
    assert scorer.score(PAIRS[0][1], PAIRS[0][0])["rouge1"].fmeasure > plain


# -- saving -------------------------------------------------------------------------------------------------------
def test_tiny_bart_saves_and_loads_with_auto_model_for_seq2seq_lm_heads_included(pool, tmp_path):
    from transformers import AutoTokenizer

    from prefinetune.heads import saved_heads

    root, tasks = pool
    model = tiny_model(root, tasks, seed=3)
    save_model(model, AutoTokenizer.from_pretrained(root / "model"), tmp_path / "saved", {"steps": 0})
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved")
    assert type(loaded).__name__ == "BartForConditionalGeneration"
    original = model.encoder.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.state_dict().items())
    assert sorted(saved_heads(tmp_path / "saved")) == ["multiple_choice", "span", "syn_01", "syn_05"]
    again = MultiTaskModel(load_encoder(tmp_path / "saved"), list(tasks.values()), dropout=0.0)
    again.load_heads(tmp_path / "saved")
    assert all(torch.equal(model.heads.state_dict()[k], v) for k, v in again.heads.state_dict().items())


# -- data: the hub layout through every stage, and what a bad file stops with ------------------------------------
def hub_folder(root, splits):
    (root / "data").mkdir(parents=True)
    files = []
    for split, columns in splits.items():
        pd.DataFrame(columns).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet", index=False)
        files.append({"split": split, "path": f"data/{split}-*.parquet"})
    card = {"configs": [{"config_name": "default", "data_files": files}]}
    (root / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n")
    return root


def summarization_entry(source, **extra):
    return {"source": source, "type": "summarization", "text": ["article"], "label": "highlights",
            "metric": "rougeL", "generation": {"num_beams": 2, "max_length": 24}, **extra}


def registry(tmp_path, **entries):
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(entries))
    return {n: dataclasses.replace(t, max_target_length=32) for n, t in load_registry(tmp_path / "tasks.yaml").items()}


def articles(seed, split, size):
    cols = generate_summaries(seed, split, size, [3, 5])
    return {"id": list(range(size)), "article": cols["document"], "highlights": cols["summary"]}


def test_hub_layout_summarization_downloads_tokenizes_trains_and_is_scored(pool, tmp_path):
    root, tasks = pool
    folder = hub_folder(tmp_path / "news", {"train": articles(7, 0, 64), "validation": articles(7, 1, 12)})
    task = registry(tmp_path, news=summarization_entry({"hub": str(folder)}))["news"]
    download(task, tmp_path / "raw")
    raw = datasets.load_from_disk(str(tmp_path / "raw"))
    assert raw["train"].column_names == ["document", "summary"] and len(raw["validation"]) == 12
    tokenize(task, tmp_path / "raw", root / "model", tmp_path / "tok", 48)
    tok = load_tokenized(tmp_path / "tok", "train")
    assert sorted(tok.column_names) == ["input_ids", "labels"] and max(map(len, tok["labels"])) <= 32
    assert load_tokenized(tmp_path / "tok", "validation_examples")["summary"] == raw["validation"]["summary"]
    data = {**{n: str(root / "tok" / n) for n in tasks}, "news": str(tmp_path / "tok")}
    mixed = [*tasks.values(), task]
    settings = {"max_steps": 6, "batch_size": 8, "lr": 1e-3, "log_every": 2}
    prefinetune(mixed, data, str(root / "model"), settings, str(tmp_path / "pft"), str(tmp_path / "pft.tsv"))
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "pft").config.is_encoder_decoder
    result = finetune(task, str(tmp_path / "tok"), str(tmp_path / "pft"), {"epochs": 1, "batch_size": 8, "lr": 1e-3},
                      1, str(tmp_path / "metrics.json"), str(tmp_path / "ft.tsv"), {"k": 6})
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    assert result["family"] == "summarization" and result["metric"] == "rougeL"
    assert set(result["metrics"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "lead_rouge1", "lead_rouge2",
                                      "lead_rougeL", "lead_rougeLsum"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values()) and result["metrics"]["lead_rouge1"] > 0
    assert result["chance"] == result["metrics"]["lead_rougeL"]  # the failed-run rule's chance: the lead baseline


@pytest.mark.parametrize("case, column, message", [
    ("missing column", "highlights", "has no column 'highlights'"),
    ("empty summary", "highlights", "row 3: column 'highlights': an empty summary"),
    ("document not a string", "article", "column 'article'"),
])
def test_bad_summarization_data_stops_the_download_naming_task_and_column(tmp_path, case, column, message):
    train, validation = articles(3, 0, 6), articles(3, 1, 4)
    if case == "missing column":
        train.pop("highlights"), validation.pop("highlights")
    elif case == "empty summary":
        train["highlights"][2] = "  "
    else:  # (in both splits: a parquet dataset has one schema)
        train["article"], validation["article"] = list(range(6)), list(range(4))
    folder = hub_folder(tmp_path / "news", {"train": train, "validation": validation})
    task = registry(tmp_path, news=summarization_entry({"hub": str(folder)}))["news"]
    with pytest.raises(ConfigError) as error:
        download(task, tmp_path / "raw")
    text = str(error.value)
    assert "task news" in text and message in text and f"'{column}'" in text and "\n" not in text
    assert not (tmp_path / "raw").exists()


def test_summarization_needs_an_encoder_decoder(pool, tmp_path):
    from transformers import RobertaConfig
    from workflow_helpers import REPO, load_config

    from prefinetune.config import Experiment

    config = load_config(REPO / "demo" / "bart" / "config.yaml")
    config["model"]["build"].pop("architecture")
    with pytest.raises(ConfigError, match=r"model\.build\.architecture: roberta \(the default\) is an encoder; "
                                          r"syn_sum_1 is a summarization task"):
        Experiment.from_config(config, REPO)
    RobertaConfig().save_pretrained(tmp_path / "encoder")
    config["model"] = {"name": "local", "path": str(tmp_path / "encoder")}
    with pytest.raises(ConfigError, match=r"model\.path: .*encoder holds an encoder \(roberta\); syn_sum_1"):
        Experiment.from_config(config, REPO)
    config["model"]["path"] = str(pool[0] / "model")  # the tiny BART: an encoder-decoder
    assert Experiment.from_config(config, REPO).tasks["syn_target_sum"].max_target_length == 48
    root, tasks = pool
    from transformers import RobertaConfig, RobertaModel

    encoder = RobertaModel(RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32), add_pooling_layer=False)
    with pytest.raises(ValueError, match="syn_sum_1: summarization needs an encoder-decoder"):
        MultiTaskModel(encoder, list(tasks.values()))


@pytest.mark.parametrize("name", ["syn_01", "syn_05", "syn_mc_1", "syn_span_1"])
def test_bart_fine_tunes_on_the_other_families_targets(pool, tmp_path, name):
    """Classification, regression, multiple choice and span targets on BART, each with its family's metrics."""
    from prefinetune.evaluation import METRICS_BY_TYPE

    root, tasks = pool
    result = finetune(tasks[name], str(root / "tok" / name), str(root / "model"),
                      {"epochs": 1, "batch_size": 16, "lr": 1e-3}, 1, str(tmp_path / "metrics.json"),
                      str(tmp_path / "log.tsv"), {"k": 0})
    assert tuple(result["metrics"]) == METRICS_BY_TYPE[tasks[name].type] and result["head"] == "new"
    rows = len(load_tokenized(root / "tok" / name, "train"))  # span: passage windows
    assert result["steps"] == math.ceil(rows / 16) and all(math.isfinite(v) for v in result["metrics"].values())
    if tasks[name].type == "regression":  # a constant prediction's correlation; predicting the mean: the variance
        labels = np.asarray(load_tokenized(root / "tok" / name, "train")["label"][:256], float)
        assert result["chance"] == 0.0 and result["loss_chance"] == pytest.approx(labels.var(), abs=1e-6)
