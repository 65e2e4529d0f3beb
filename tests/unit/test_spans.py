"""Span extraction: strided windows over long passages, answers mapped back to the exact passage text, and
SQuAD's exact match / F1 on hand-made cases."""

import pytest
from datasets import Dataset

from prefinetune.evaluation import compute_metrics
from prefinetune.metrics import normalize_answer, span_metrics, token_f1
from prefinetune.models import build_tiny_roberta
from prefinetune.spans import NO_OFFSET, best_answers, token_span, windows
from prefinetune.synthetic import generate, vocabulary

MAX_LENGTH, STRIDE = 32, 8


@pytest.fixture(scope="module")
def tokenizer():
    texts = list(generate({"seed": 1, "train": 400, "validation": 1}, "classification", 2)["train"]["sentence"])
    tok, _ = build_tiny_roberta({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "vocab_size": 400}, texts)
    return tok


def passage_with_answer(n_words: int, position: int, length: int):
    """A passage of ``n_words`` vocabulary words and the answer: ``length`` words starting at word ``position``."""
    words, _ = vocabulary()
    text_words = [words[(7 * i + 3) % len(words)] for i in range(n_words)]
    start = len(" ".join(text_words[:position])) + (1 if position else 0)
    answer = " ".join(text_words[position:position + length])
    return " ".join(text_words), {"text": [answer], "answer_start": [start]}


@pytest.fixture(scope="module")
def examples():
    """One long passage, the answer moved across every word position (so across every window edge)."""
    rows = {"question": [], "context": [], "answers": []}
    for position in range(0, 38):
        context, answers = passage_with_answer(40, position, 2)
        rows["question"].append("kite ronado")
        rows["context"].append(context)
        rows["answers"].append(answers)
    return Dataset.from_dict(rows)


@pytest.fixture(scope="module")
def windowed(tokenizer, examples):
    return examples.map(windows(tokenizer, MAX_LENGTH, STRIDE), batched=True, with_indices=True,
                        remove_columns=examples.column_names)


def test_long_passages_become_overlapping_windows(windowed, examples, tokenizer):
    assert len(windowed) > len(examples)  # 40 words do not fit one 32-token window
    assert all(len(ids) <= MAX_LENGTH for ids in windowed["input_ids"])
    assert sorted(set(windowed["example"])) == list(range(len(examples)))
    for i in range(len(examples)):
        rows = [r for r in windowed if r["example"] == i]
        spans = [[o for o in r["offsets"] if tuple(o) != NO_OFFSET] for r in rows]
        for a, b in zip(spans, spans[1:]):  # consecutive windows share tokens, and move forward
            assert a[-1][1] > b[0][0] and b[-1][1] > a[-1][1]
        assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(examples[i]["context"])


def test_answer_labels_map_back_to_exact_text(windowed, examples):
    labelled = 0
    for row in windowed:
        start, end = row["start_positions"], row["end_positions"]
        if (start, end) == (0, 0):
            continue
        labelled += 1
        example = examples[row["example"]]
        text = example["context"][row["offsets"][start][0]:row["offsets"][end][1]]
        assert text == example["answers"]["text"][0]
    # every answer lies whole inside at least one window (2 words are fewer tokens than the stride)
    assert len({r["example"] for r in windowed if r["start_positions"] > 0}) == len(examples)
    assert labelled >= len(examples)


def test_window_that_cuts_the_answer_points_at_the_first_token():
    offsets = [NO_OFFSET, NO_OFFSET, (0, 4), (5, 9), (10, 14), NO_OFFSET]  # passage tokens cover chars 0..14
    assert token_span(offsets, 5, 14) == (3, 4)
    assert token_span(offsets, 0, 4) == (2, 2)
    assert token_span(offsets, 10, 20) == (0, 0)  # the answer runs past the window's end
    assert token_span([NO_OFFSET, NO_OFFSET, (12, 15), NO_OFFSET], 10, 14) == (0, 0)  # starts before it


def test_best_answers_recover_gold_text_across_windows(windowed, examples):
    """Logits that peak at each window's gold tokens give back every original answer exactly."""
    starts, ends = [], []
    for row in windowed:
        n = len(row["input_ids"])
        s, e = [0.0] * n, [0.0] * n
        if row["start_positions"] > 0:
            s[row["start_positions"]] = e[row["end_positions"]] = 10.0
        starts.append(s)
        ends.append(e)
    predicted = best_answers(starts, ends, windowed["offsets"], windowed["example"], examples["context"],
                             max_answer_tokens=30, allow_null=False)
    assert predicted == [a["text"][0] for a in examples["answers"]]
    metrics = compute_metrics("span", predicted, [a["text"] for a in examples["answers"]])
    assert metrics == {"exact_match": 1.0, "f1": 1.0}


def test_best_answers_null_and_length_limit():
    offsets = [[NO_OFFSET, (0, 3), (4, 7), (8, 11), NO_OFFSET]]
    context = ["abc def ghi"]
    start, end = [[5.0, 1.0, 0.0, 0.0, 0.0]], [[5.0, 0.0, 0.0, 2.0, 0.0]]
    assert best_answers(start, end, offsets, [0], context, 30, allow_null=True) == [""]
    assert best_answers(start, end, offsets, [0], context, 30, allow_null=False) == ["abc def ghi"]
    assert best_answers(start, end, offsets, [0], context, 2, allow_null=False) == ["def ghi"]  # 3 tokens too long


# -- exact match and F1: SQuAD v1.1's official definitions, values computed by hand ------------------------------
@pytest.mark.parametrize("raw, normalized", [
    ("The Cat!", "cat"), ("  an  apple, a pear ", "apple pear"), ("Theatre", "theatre"), ("U.S.A.", "usa"),
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_token_f1_by_hand():
    assert token_f1("cat sat on mat", "the cat sat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P 2/4, R 2/2
    assert token_f1("x b b", "b b c") == pytest.approx(2 / 3)  # common = 2 (with multiplicity): P = R = 2/3
    assert token_f1("a b b", "b b c") == pytest.approx(0.8)  # "a" is an article: P = 1, R = 2/3
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_span_metrics_take_the_best_gold_and_average():
    predictions = ["The cat", "sat on", "", "blue"]
    golds = [["a cat", "dog"], ["sat", "sat on the mat"], [], ["red"]]
    m = span_metrics(predictions, golds)
    assert m["exact_match"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    f1_second = max(token_f1("sat on", "sat"), token_f1("sat on", "sat on the mat"))  # 2/3 vs 0.8 -> 0.8
    assert f1_second == pytest.approx(0.8)
    assert m["f1"] == pytest.approx((1 + 0.8 + 1 + 0) / 4)
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        span_metrics(["a", "b"], [["a"]])
