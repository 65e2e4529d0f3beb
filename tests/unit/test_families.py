"""The three task families through the real path: a dataset folder in the Hugging Face hub layout, read by
``datasets.load_dataset``, checked and put in its family's layout, tokenized, then trained together in
heterogeneous batches and fine-tuned and scored as a target.

The fixtures mimic real datasets' shapes: ARC (choices in a struct, letter answers, 3 to 5 choices), PIQA
(one column per choice), SQuAD ({text, answer_start} answers), MRQA (detected_answers with inclusive
character spans, several sources in one dataset told apart by a `subset` column) and a classification
dataset with string labels.
"""

import json

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from prefinetune.config import DEFAULT_TRAIN
from prefinetune.data import download, fraction, load_tokenized, tokenize
from prefinetune.failed_runs import failed
from prefinetune.heads import MultiTaskModel
from prefinetune.models import fetch
from prefinetune.stages import finetune
from prefinetune.synthetic import generate_choices, generate_spans, generate_split
from prefinetune.tasks import ConfigError
from prefinetune.training import load_encoder, save_model, train
from test_data import registry, write_hub_folder

MAX_LENGTH, STRIDE = 48, 12
LETTERS = "ABCDE"
SETTINGS = {**DEFAULT_TRAIN, "batch_size": 16, "seed": 0, "temperature": 1.0, "cap": None, "batches": "heterogeneous", "lr": 1e-3,
            "weight_decay": 0.0, "warmup_ratio": 0.0, "grad_accum": 1, "max_grad_norm": 1.0, "log_every": 5,
            "epochs": 1, "dropout": 0.0, "loss_scaling": False, "eval_batch_size": 16, "max_answer_tokens": 10,
            "carry_heads": False}


pytestmark = pytest.mark.usefixtures("isolated_hf")


# -- fixtures in the layout of real datasets ----------------------------------------------------------------------
def arc_like(seed, split, n):
    cols = generate_choices(seed, split, n, choices=[3, 4, 5])
    return pd.DataFrame({
        "id": [f"q{i}" for i in range(n)],
        "question": cols["context"],
        "choices": [{"text": c, "label": list(LETTERS[: len(c)])} for c in cols["choices"]],
        "answerKey": [LETTERS[y] for y in cols["label"]],
    })


def piqa_like(seed, split, n):
    cols = generate_choices(seed, split, n, choices=[2])
    return pd.DataFrame({"goal": cols["context"], "sol1": [c[0] for c in cols["choices"]],
                         "sol2": [c[1] for c in cols["choices"]], "label": cols["label"]})


def squad_like(seed, split, n):
    cols = generate_spans(seed, split, n, span_length=2, passage_words=[25, 45])
    return pd.DataFrame({"id": [f"s{i}" for i in range(n)], "title": "t", **cols})


def mrqa_like(seed, split, n, subsets=("NewsQA", "SearchQA")):
    """MRQA's layout; every other row belongs to another source ('SearchQA') that the task filters out. MRQA's
    test split holds only out-of-domain sources (``subsets=("BioASQ", "DROP")``)."""
    cols = generate_spans(seed, split, n, span_length=1, passage_words=[25, 45])
    detected = [{"text": a["text"], "char_spans": [{"start": [s], "end": [s + len(t) - 1]}  # inclusive ends
                                                   for s, t in zip(a["answer_start"], a["text"])]}
                for a in cols["answers"]]
    return pd.DataFrame({"subset": list(subsets) * (n // 2), "context": cols["context"],
                         "question": cols["question"], "qid": [str(i) for i in range(n)],
                         "detected_answers": detected, "answers": [a["text"] for a in cols["answers"]]})


def race_like(seed, split, n):
    """RACE's layout: a long article (longer than MAX_LENGTH tokens), a question, 4 options, a letter answer."""
    cols = generate_choices(seed, split, n, choices=[4])
    articles = generate_spans(seed, split, n, span_length=1, passage_words=[60, 90])["context"]
    questions = [" ".join(q.split()[:3]) for q in cols["context"]]  # short: the tiny tokenizer splits words finely
    return pd.DataFrame({"example_id": [f"r{i}" for i in range(n)], "article": articles, "question": questions,
                         "options": cols["choices"], "answer": [LETTERS[y] for y in cols["label"]]})


def nli_like(seed, split, n):
    cols = generate_split(seed, split, n, pair=True, task_type="classification", num_labels=3)
    names = ["entailment", "neutral", "contradiction"]
    return pd.DataFrame({"premise": cols["sentence1"], "hypothesis": cols["sentence2"],
                         "gold": [names[y] for y in cols["label"]]})


FIXTURES = {  # name: (row maker, registry entry without source, train size)
    "arc": (arc_like, {"type": "multiple_choice", "text": ["question"], "choices": "choices.text",
                       "label": "answerKey", "label_map": {c: i for i, c in enumerate(LETTERS)}, "num_labels": 5,
                       "metric": "accuracy"}, 90),
    "piqa": (piqa_like, {"type": "multiple_choice", "text": ["goal"], "choices": ["sol1", "sol2"], "label": "label",
                         "num_labels": 2, "metric": "accuracy"}, 60),
    "race": (race_like, {"type": "multiple_choice", "text": ["article", "question"], "choices": "options",
                         "label": "answer", "label_map": {c: i for i, c in enumerate("ABCD")}, "num_labels": 4,
                         "metric": "accuracy"}, 40),
    "squad": (squad_like, {"type": "span", "text": ["question", "context"], "label": "answers", "metric": "f1"}, 80),
    "newsqa": (mrqa_like, {"type": "span", "text": ["question", "context"], "label": "detected_answers",
                           "answer_format": "mrqa", "metric": "exact_match"}, 80),
    "nli": (nli_like, {"type": "classification", "text": ["premise", "hypothesis"], "label": "gold",
                       "label_map": {"entailment": 0, "neutral": 1, "contradiction": 2}, "num_labels": 3,
                       "metric": "accuracy"}, 70),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every fixture dataset written in the hub layout, downloaded, and tokenized with a tiny model's tokenizer."""
    root = tmp_path_factory.mktemp("families")
    entries, frames = {}, {}
    for seed, (name, (make, entry, n)) in enumerate(FIXTURES.items(), start=50):
        frames[name] = {"train": make(seed, 0, n), "validation": make(seed, 1, 30)}
        if name == "newsqa":  # as in MRQA, the test split holds other sources only (unused, and no reason to stop)
            frames[name]["test"] = mrqa_like(seed, 2, 10, subsets=("BioASQ", "DROP"))
        folder = write_hub_folder(root / "hub" / name, frames[name])
        source = {"hub": str(folder)}
        if name == "newsqa":
            source["filter"] = {"subset": "NewsQA"}
        entries[name] = {"source": source, **entry}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf_cache")
        tasks = registry(root, **entries)
        for name, task in tasks.items():
            download(task, root / "raw" / name)
        texts = [t for name in ("piqa", "squad", "nli", "race") for df in frames[name].values()
                 for col in df.columns if df[col].dtype == object and isinstance(df[col].iloc[0], str)
                 for t in df[col]]
        fetch({"name": "tiny", "build": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                         "intermediate_size": 64, "vocab_size": 500}}, root / "model", texts=texts)
        for name, task in tasks.items():
            tokenize(task, root / "raw" / name, root / "model", root / "tok" / name, MAX_LENGTH, doc_stride=STRIDE)
    return root, tasks, frames


def test_each_family_is_stored_in_its_layout(prepared):
    root, tasks, frames = prepared
    raw = {name: datasets.load_from_disk(str(root / "raw" / name)) for name in tasks}
    arc = raw["arc"]["train"]
    assert sorted(arc.column_names) == ["choices", "context", "label", "question"]
    assert arc["context"] == list(frames["arc"]["train"]["question"]) and set(arc["question"]) == {""}
    race = raw["race"]["train"]  # [article, question]: the passage and the question stay apart
    assert race["context"] == list(frames["race"]["train"]["article"])
    assert race["question"] == list(frames["race"]["train"]["question"])
    assert arc["label"] == ["ABCDE".index(k) for k in frames["arc"]["train"]["answerKey"]]
    assert {len(c) for c in arc["choices"]} == {3, 4, 5}
    assert raw["piqa"]["train"][0]["choices"] == [frames["piqa"]["train"]["sol1"][0], frames["piqa"]["train"]["sol2"][0]]
    squad = raw["squad"]["validation"]
    assert sorted(squad.column_names) == ["answers", "context", "question"]
    newsqa = raw["newsqa"]["train"]
    assert sorted(raw["newsqa"]) == ["train", "validation"]  # the test split (other sources) is not kept
    assert len(newsqa) == 40 and len(raw["newsqa"]["validation"]) == 15  # only the NewsQA half of the rows
    for row in newsqa:  # inclusive MRQA spans became SQuAD starts that point at the exact text
        a = row["answers"]
        assert row["context"][a["answer_start"][0]:a["answer_start"][0] + len(a["text"][0])] == a["text"][0]
    assert raw["nli"]["train"]["gold"][:3] == [["entailment", "neutral", "contradiction"].index(g)
                                               for g in frames["nli"]["train"]["gold"][:3]]


def test_tokenized_rows_per_family(prepared):
    root, tasks, _ = prepared
    arc = load_tokenized(root / "tok" / "arc", "train")
    assert all(isinstance(choice, list) for choice in arc[0]["input_ids"])  # one sequence per choice
    assert {len(r) for r in arc["input_ids"]} == {3, 4, 5}
    squad = load_tokenized(root / "tok" / "squad", "train")
    assert len(squad) > 80 and max(len(r) for r in squad["input_ids"]) == MAX_LENGTH  # long passages: windows
    assert set(squad.column_names) == {"input_ids", "start_positions", "end_positions", "offsets", "example"}
    assert len(load_tokenized(root / "tok" / "squad", "validation_examples")) == 30


def test_truncation_cuts_the_passage_and_keeps_question_and_option(prepared, tmp_path):
    """RACE's articles are longer than max_length; every (article, question + option) row must still end with the
    whole question and option, and only the article is cut."""
    from transformers import AutoTokenizer

    root, tasks, _ = prepared
    max_length = 128  # the tiny tokenizer splits words finely: room for a question, an option and some article
    tokenize(tasks["race"], root / "raw" / "race", root / "model", tmp_path / "race", max_length)
    tokenizer = AutoTokenizer.from_pretrained(str(root / "model"))
    raw = datasets.load_from_disk(str(root / "raw" / "race"))
    for split in ("train", "validation"):
        rows = load_tokenized(tmp_path / "race", split)["input_ids"]
        assert len(rows) == len(raw[split])
        for choices, example in zip(rows, raw[split]):
            article = tokenizer(example["context"], add_special_tokens=False)["input_ids"]
            assert len(article) > max_length  # the fixture's passages do not fit
            for row, option in zip(choices, example["choices"], strict=True):
                ending = tokenizer(f"{example['question']} {option}", add_special_tokens=False)["input_ids"]
                assert len(row) == max_length
                assert row[-1 - len(ending):-1] == ending  # question and option whole, before the final </s>
                kept = row[1:len(row) - len(ending) - 3]  # <s> passage </s></s> ending </s>
                assert len(kept) >= len(ending) and kept == article[:len(kept)]  # only the passage's end is cut


def test_three_families_train_together_in_heterogeneous_batches(prepared, tmp_path):
    root, tasks, _ = prepared
    data = {name: load_tokenized(root / "tok" / name, "train") for name in tasks}
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(root / "model"), list(tasks.values()), dropout=0.0)
    assert set(model.heads) == {"multiple_choice", "span", "nli"}
    before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    settings = {**SETTINGS, "batch_size": 24, "grad_accum": 2, "log_every": 1}
    summary = train(model, data, settings, steps=6, pad_id=1, log_path=tmp_path / "log.tsv")
    log = pd.read_csv(tmp_path / "log.tsv", sep="\t")
    assert len(log) == 6 and np.isfinite(log["loss"]).all()
    assert (log["tasks_in_update"] >= 4).all()  # every update mixes datasets of all three families
    after = model.heads.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in ("multiple_choice.out_proj.weight",
                                                              "span.qa_outputs.weight", "nli.out_proj.weight"))
    assert np.isfinite(summary["final_loss"])


@pytest.mark.parametrize("target, metrics", [("arc", {"accuracy"}), ("newsqa", {"exact_match", "f1"}),
                                             ("nli", {"accuracy", "f1", "matthews"})])
def test_finetune_scores_each_family(prepared, tmp_path, target, metrics):
    root, tasks, _ = prepared
    result = finetune(tasks[target], str(root / "tok" / target), str(root / "model"), SETTINGS, 1,
                      str(tmp_path / "metrics.json"), str(tmp_path / "log.tsv"), {"k": 0, "draw": 0})
    assert set(result["metrics"]) == metrics
    assert result["value"] == result["metrics"][tasks[target].metric]
    assert all(0.0 <= v <= 1.0 for k, v in result["metrics"].items() if k != "matthews")
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    assert result["family"] == tasks[target].family and result["head"] == "new"
    # what the failed-run rule reads: the chance score of the validation split, the first and last logged loss
    if target == "newsqa":  # the empty answer: every validation question here has one
        assert result["chance"] == 0.0
    else:  # the best constant class or answer position
        labels = load_tokenized(root / "tok" / target, "validation")["label"]
        assert result["chance"] == pytest.approx(max(np.mean(np.equal(labels, c)) for c in range(4)))
        assert 0.25 <= result["chance"] < 1
    # the loss on the first training examples before and after: this tiny model's multiple-choice and classification
    # runs learn nothing (the loss stays, they score as a constant does), its span run learns (loss 3.9 -> 0.9)
    # but its answers score 0, chance: the rule marks the first two as failed, not the third
    assert result["loss_start"] > 0 and result["loss_end"] > 0
    if target == "newsqa":
        assert result["loss_chance"] is None
    else:  # the entropy of the first 256 training labels' frequencies
        labels = np.asarray(load_tokenized(root / "tok" / target, "train")["label"][:256])
        share = np.unique(labels, return_counts=True)[1] / len(labels)
        assert result["loss_chance"] == pytest.approx(-(share * np.log(share)).sum(), abs=1e-6)
    marked = failed(pd.DataFrame([result]))[0]
    assert marked == (target != "newsqa"), (result["loss_start"], result["loss_end"], result["value"])


def test_carried_heads_start_from_the_prefinetuned_ones(prepared, tmp_path):
    root, tasks, _ = prepared
    torch.manual_seed(5)
    multi = MultiTaskModel(load_encoder(root / "model"), [tasks["arc"], tasks["squad"], tasks["nli"]])
    from transformers import AutoTokenizer

    save_model(multi, AutoTokenizer.from_pretrained(str(root / "model")), tmp_path / "pft", {"steps": 0})
    settings = {**SETTINGS, "epochs": 0.01, "carry_heads": True}
    runs = {}
    for name in ("piqa", "arc", "nli"):  # piqa shares the multiple-choice head but was not pre-finetuned
        runs[name] = finetune(tasks[name], str(root / "tok" / name), str(tmp_path / "pft"), settings, 1,
                              str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.tsv"), {})
    assert runs["arc"]["head"] == "pre-finetuned" and runs["nli"]["head"] == "pre-finetuned"
    assert runs["piqa"]["head"] == "new"


def test_fractions_are_nested_and_keep_windows_with_their_example(prepared):
    root, _, _ = prepared
    windows = load_tokenized(root / "tok" / "squad", "train")
    kept = {p: set(fraction(windows, p, seed=3)["example"]) for p in (10, 50, 100)}
    assert len(kept[10]) == 8 and len(kept[50]) == 40 and len(kept[100]) == 80
    assert kept[10] < kept[50] < kept[100]
    half = fraction(windows, 50, seed=3)
    assert len(half) == sum(e in kept[50] for e in windows["example"])  # every window of a kept example
    assert set(fraction(windows, 50, seed=4)["example"]) != kept[50]  # another seed, another half


def test_label_errors_name_the_row_problem(tmp_path):
    frames = {"train": arc_like(1, 0, 10), "validation": arc_like(1, 1, 5)}
    frames["validation"].loc[2, "answerKey"] = "Z"
    folder = write_hub_folder(tmp_path / "arc", frames)
    entry = {"source": {"hub": str(folder)}, **FIXTURES["arc"][1]}
    with pytest.raises(ConfigError, match="label 'Z' is not in arc.label_map"):
        download(registry(tmp_path, arc=entry)["arc"], tmp_path / "raw")
    entry = {"source": {"hub": str(folder)}, **FIXTURES["arc"][1], "num_labels": 4, "label_map": {"A": 0, "B": 1, "C": 2, "D": 3}}
    with pytest.raises(ConfigError, match="label 'E' is not in arc.label_map|choices; arc.num_labels allows 2..4"):
        download(registry(tmp_path, arc=entry)["arc"], tmp_path / "raw1")
    frames = {split: df[[len(c["text"]) <= 4 for c in df["choices"]]].reset_index(drop=True) for split, df in frames.items()}
    frames["train"].at[0, "choices"] = {"text": list("vwxyz"), "label": list("ABCDE")}  # one row with 5 choices
    folder = write_hub_folder(tmp_path / "arc5", frames)
    entry["source"] = {"hub": str(folder)}
    with pytest.raises(ConfigError, match="choices; arc.num_labels allows 2..4"):
        download(registry(tmp_path, arc=entry)["arc"], tmp_path / "raw2")


def test_misplaced_answer_is_reported(tmp_path):
    frames = {"train": squad_like(1, 0, 10), "validation": squad_like(1, 1, 5)}
    frames["train"].at[3, "answers"] = {"text": ["nowhere"], "answer_start": [0]}
    folder = write_hub_folder(tmp_path / "sq", frames)
    entry = {"source": {"hub": str(folder)}, **FIXTURES["squad"][1]}
    with pytest.raises(ConfigError, match="answer 'nowhere' is not the passage's text at offset 0"):
        download(registry(tmp_path, sq=entry)["sq"], tmp_path / "raw")


def test_mrqa_spans_give_the_answer_text_and_differences_are_counted(tmp_path, capsys):
    """MRQA's detected text is normalised; its character span is what it found in the passage. A row whose text
    differs from the span's is kept with the span's text and counted; a span outside the passage stops the task."""
    frames = {"train": mrqa_like(1, 0, 10), "validation": mrqa_like(1, 1, 6)}
    shifted = frames["train"].at[4, "detected_answers"]
    span = shifted["char_spans"][0]
    frames["train"].at[4, "detected_answers"] = {**shifted, "char_spans": [{"start": [span["start"][0] + 1],
                                                                            "end": [span["end"][0] + 1]}]}
    entry = {"source": {"hub": str(write_hub_folder(tmp_path / "mrqa", frames)), "filter": {"subset": "NewsQA"}},
             **FIXTURES["newsqa"][1]}
    download(registry(tmp_path, n=entry)["n"], tmp_path / "raw")
    assert ("split 'train' (rows after source.filter): 1 of 5 rows have an MRQA answer text that differs from the "
            "passage's text at its span after normalisation (the span's text is used); first rows: [3]\n"
            in capsys.readouterr().out)
    train = datasets.load_from_disk(str(tmp_path / "raw"))["train"]
    context, start = train[2]["context"], span["start"][0] + 1  # row 4 of the source is the 3rd NewsQA row
    assert train[2]["answers"] == {"text": [context[start:span["end"][0] + 2]], "answer_start": [start]}

    frames["train"].at[6, "detected_answers"] = {**shifted, "char_spans": [{"start": [5], "end": [10 ** 6]}]}
    entry["source"]["hub"] = str(write_hub_folder(tmp_path / "mrqa2", frames))
    with pytest.raises(ConfigError, match=r"split 'train' \(rows after source.filter\): row 4: answer span 5\.\.1000000 lies outside the passage"):
        download(registry(tmp_path, n=entry)["n"], tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()


def test_a_filter_that_keeps_nothing_is_an_error(tmp_path):
    frames = {"train": mrqa_like(1, 0, 10), "validation": mrqa_like(1, 1, 6)}
    folder = write_hub_folder(tmp_path / "mrqa", frames)
    entry = {"source": {"hub": str(folder), "filter": {"subset": "NewsQa"}}, **FIXTURES["newsqa"][1]}
    with pytest.raises(ConfigError, match="source.filter: no row of split.*subset == 'NewsQa'"):
        download(registry(tmp_path, n=entry)["n"], tmp_path / "raw")
