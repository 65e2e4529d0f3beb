"""Muppet's heads (one per classification dataset, one shared by all multiple-choice datasets, one shared by
all span datasets) and its loss scaling, on a tiny randomly initialised RoBERTa."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModel, RobertaConfig, RobertaModel

from prefinetune.batch import Segment
from prefinetune.families import family, head_name
from prefinetune.families.multiple_choice import choice_scores
from prefinetune.heads import HEADS_INDEX, HEADS_WEIGHTS, MultiTaskModel, example_losses
from prefinetune.tasks import Task


def make_task(name, num_labels, type_="classification"):
    return Task(name=name, type=type_, text=("sentence",), label="label", num_labels=num_labels,
                metric="accuracy" if type_ == "classification" else "pearson", source={"generator": {}})


BIN = make_task("bin", 2)
TRI = make_task("tri", 3)
FIVE = make_task("five", 5)
REG = make_task("reg", 1, "regression")
UNUSED = make_task("unused", 4)


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, type_vocab_size=1, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    return RobertaModel(config, add_pooling_layer=False)


def mixed_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 60, (9, 7), generator=g)
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    attention_mask[3, 5:] = 0
    input_ids[3, 5:] = 1
    labels = torch.tensor([0, 1, 1, 2, 0, 1, 2, 0.5, -1.25])
    segments = [Segment("bin", 0, 3, labels[0:3]), Segment("tri", 3, 7, labels[3:7]), Segment("reg", 7, 9, labels[7:9])]
    return input_ids, attention_mask, segments, labels


def unlabelled(segments):
    return [Segment(s.task, s.start, s.end, None, s.choice_counts) for s in segments]


# -- loss scale ----------------------------------------------------------------------------------------------
def loss_scale(task, outputs, labels, label_cost=None):
    """The multiplier of a task's per-example loss: 1 / the cost of an uninformed prediction; 1 unscaled."""
    _, cost = family(task).model.losses(task, outputs, labels, label_cost=label_cost)
    return 1.0 if cost is None else 1 / float(cost if isinstance(cost, float) else cost[0])


def test_loss_scale():
    assert loss_scale(BIN, torch.zeros(1, 2), torch.tensor([0])) == pytest.approx(1 / math.log(2))
    assert loss_scale(TRI, torch.zeros(1, 3), torch.tensor([0])) == pytest.approx(1 / math.log(3))
    assert loss_scale(FIVE, torch.zeros(1, 5), torch.tensor([0])) == pytest.approx(1 / math.log(5))
    assert loss_scale(REG, torch.zeros(1, 1), torch.tensor([0.5])) == 1.0  # the labels' variance unknown: unscaled
    assert loss_scale(REG, torch.zeros(1, 1), torch.tensor([0.5]), label_cost=2.5) == pytest.approx(1 / 2.5)


def test_predicting_the_mean_of_regression_labels_costs_one():
    """Regression's counterpart of 1 / log(n): the loss divided by the variance of the training labels, which the
    family reads from them; predicting their mean then costs 1 on average, whatever their scale."""
    labels = np.random.default_rng(0).uniform(0, 5, 400).astype(np.float32)  # STS-B-like: 0 to 5
    cost = family(REG).model.label_cost(REG, labels)
    assert cost == pytest.approx(labels.var())
    mean = torch.full((len(labels), 1), float(labels.mean()))
    scaled = example_losses(REG, mean, torch.from_numpy(labels), scale=True, label_cost=cost)
    assert scaled.mean().item() == pytest.approx(1.0, rel=1e-5)
    raw = example_losses(REG, mean, torch.from_numpy(labels), scale=False, label_cost=cost)
    assert raw.mean().item() == pytest.approx(labels.var(), rel=1e-5) and raw.mean().item() > 1.5
    assert family(REG).model.label_cost(REG, np.full(5, 2.0, np.float32)) is None  # constant labels: unscaled


@pytest.mark.parametrize("task", [BIN, TRI, FIVE], ids=lambda t: t.name)
def test_uniform_prediction_costs_one(task):
    n = task.num_labels
    logits = torch.zeros(n, n)  # one row per true class
    labels = torch.arange(n)
    scaled = example_losses(task, logits, labels, scale=True)
    assert scaled.shape == (n,)
    assert torch.allclose(scaled, torch.ones(n), atol=1e-6)
    raw = example_losses(task, logits, labels, scale=False)
    assert torch.allclose(raw, torch.full((n,), math.log(n)), atol=1e-6)


def test_labels_as_float_are_accepted():
    """The collator ships all labels as float32; classification must still use them as class indices."""
    logits = torch.tensor([[0.0, 3.0, 0.0]])
    loss = example_losses(TRI, logits, torch.tensor([1.0]), scale=False)
    expected = -torch.log_softmax(logits, -1)[0, 1]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_regression_loss_is_unscaled_squared_error():
    pred = torch.tensor([[0.5], [2.0]])
    gold = torch.tensor([1.0, -1.0])
    for scale in (True, False):
        loss = example_losses(REG, pred, gold, scale=scale)
        assert torch.allclose(loss, torch.tensor([0.25, 9.0]))


# -- MultiTaskModel ------------------------------------------------------------------------------------------
def test_heads_have_task_shapes():
    model = MultiTaskModel(tiny_encoder(), [BIN, TRI, REG, UNUSED], dropout=0.0)
    assert set(model.heads) == {"bin", "tri", "reg", "unused"}
    assert model.heads["tri"].out_proj.out_features == 3
    assert model.heads["reg"].out_proj.out_features == 1
    assert model.heads["unused"].out_proj.out_features == 4


def test_forward_on_mixed_batch_matches_hand_computation():
    model = MultiTaskModel(tiny_encoder(), [BIN, TRI, REG, UNUSED], dropout=0.0).eval()
    input_ids, attention_mask, segments, labels = mixed_batch()
    loss, logits = model(input_ids, attention_mask, segments)

    assert set(logits) == {"bin", "tri", "reg"}
    assert logits["bin"].shape == (3, 2)
    assert logits["tri"].shape == (4, 3)
    assert logits["reg"].shape == (2, 1)

    with torch.no_grad():
        cls = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        per_example, per_example_raw = [], []
        for seg in segments:
            name, start, end = seg.task, seg.start, seg.end
            head = model.heads[name]
            out = head.out_proj(torch.tanh(head.dense(cls[start:end])))
            assert torch.allclose(out, logits[name], atol=1e-5)
            y = labels[start:end]
            if name == "reg":
                per_example += ((out.squeeze(-1) - y) ** 2).tolist()
                per_example_raw += ((out.squeeze(-1) - y) ** 2).tolist()
            else:
                n = out.shape[-1]
                nll = -torch.log_softmax(out, -1)[torch.arange(end - start), y.long()]
                per_example += (nll / math.log(n)).tolist()
                per_example_raw += nll.tolist()
    assert len(per_example) == 9
    assert loss.item() == pytest.approx(sum(per_example) / len(per_example), rel=1e-5)

    # without scaling: the classification losses are not divided by log n
    model.loss_scaling = False
    unscaled, _ = model(input_ids, attention_mask, segments)
    assert unscaled.item() == pytest.approx(sum(per_example_raw) / 9, rel=1e-5)
    assert unscaled.item() != pytest.approx(loss.item(), rel=1e-3)


def test_forward_without_labels_has_no_loss():
    model = MultiTaskModel(tiny_encoder(), [BIN, TRI, REG], dropout=0.0).eval()
    input_ids, attention_mask, segments, _ = mixed_batch()
    loss, logits = model(input_ids, attention_mask, unlabelled(segments))
    assert loss is None
    assert set(logits) == {"bin", "tri", "reg"}


def test_gradients_reach_only_heads_in_batch_and_encoder():
    model = MultiTaskModel(tiny_encoder(), [BIN, TRI, REG, UNUSED, FIVE], dropout=0.1).train()
    input_ids, attention_mask, segments, labels = mixed_batch()
    loss, _ = model(input_ids, attention_mask, segments)
    loss.backward()
    for name in ("bin", "tri", "reg"):
        for p in model.heads[name].parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    for name in ("unused", "five"):
        for p in model.heads[name].parameters():
            assert p.grad is None
    word_emb = model.encoder.embeddings.word_embeddings.weight
    assert word_emb.grad is not None and word_emb.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.encoder.encoder.parameters())


def test_save_and_load_heads_round_trip(tmp_path):
    tasks = [BIN, TRI, REG]
    a = MultiTaskModel(tiny_encoder(), tasks)
    a.save_heads(tmp_path)
    assert (tmp_path / HEADS_WEIGHTS).is_file()
    index = json.loads((tmp_path / HEADS_INDEX).read_text())
    assert index == {"bin": {"type": "classification", "num_labels": 2, "tasks": ["bin"]},
                     "tri": {"type": "classification", "num_labels": 3, "tasks": ["tri"]},
                     "reg": {"type": "regression", "num_labels": 1, "tasks": ["reg"]}}

    encoder = tiny_encoder()
    torch.manual_seed(123)
    b = MultiTaskModel(encoder, tasks)
    assert not torch.equal(a.heads["bin"].dense.weight, b.heads["bin"].dense.weight)
    b.load_heads(tmp_path)
    for (ka, va), (kb, vb) in zip(a.heads.state_dict().items(), b.heads.state_dict().items()):
        assert ka == kb
        assert torch.equal(va, vb)


def test_load_selected_heads(tmp_path):
    a = MultiTaskModel(tiny_encoder(), [BIN, TRI, REG])
    a.save_heads(tmp_path)
    encoder = tiny_encoder()
    torch.manual_seed(7)
    b = MultiTaskModel(encoder, [BIN, TRI])
    assert not torch.equal(b.heads["bin"].out_proj.weight, a.heads["bin"].out_proj.weight)
    before_tri = b.heads["tri"].out_proj.weight.clone()
    b.load_heads(tmp_path, names=["bin"])
    assert torch.equal(b.heads["bin"].out_proj.weight, a.heads["bin"].out_proj.weight)
    assert torch.equal(b.heads["tri"].out_proj.weight, before_tri)


def test_load_heads_rejects_unknown_heads(tmp_path):
    a = MultiTaskModel(tiny_encoder(), [BIN, TRI, REG])
    a.save_heads(tmp_path)
    b = MultiTaskModel(tiny_encoder(), [BIN])
    with pytest.raises(ValueError, match="tri"):
        b.load_heads(tmp_path)


def test_saved_encoder_loads_with_automodel(tmp_path):
    from prefinetune.models import build_tiny_roberta
    from prefinetune.synthetic import generate
    from prefinetune.training import save_model

    texts = list(generate({"seed": 1, "train": 300, "validation": 1}, "classification", 2)["train"]["sentence"])
    tokenizer, encoder = build_tiny_roberta({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                             "vocab_size": 300}, texts)
    model = MultiTaskModel(encoder, [BIN, TRI, REG]).eval()
    out = tmp_path / "model"
    save_model(model, tokenizer, out, {"steps": 0})
    assert (out / "model.safetensors").is_file()
    assert (out / "config.json").is_file()
    assert (out / HEADS_WEIGHTS).is_file()
    assert (out / "prefinetune.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name != "model"]  # no temporary left behind

    loaded = AutoModel.from_pretrained(str(out)).eval()
    assert type(loaded).__name__ == "RobertaModel"
    enc = tokenizer(texts[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        got = loaded(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    assert torch.equal(want, got)

    again = MultiTaskModel(loaded, [BIN, TRI, REG])
    again.load_heads(out)
    for k, v in model.heads.state_dict().items():
        assert torch.equal(v, again.heads.state_dict()[k])


# -- shared heads: multiple choice and span extraction --------------------------------------------------------
def mc_task(name, num_choices):
    return Task(name=name, type="multiple_choice", text=("context",), label="label", num_labels=num_choices,
                metric="accuracy", source={"generator": {}}, choices=("choices",))


def span_task(name):
    return Task(name=name, type="span", text=("question", "context"), label="answers", num_labels=0,
                metric="f1", source={"generator": {}})


MC2, MC5 = mc_task("mc2", 2), mc_task("mc5", 5)
SQ, NQ = span_task("sq"), span_task("nq")


def test_shared_heads_one_per_family():
    model = MultiTaskModel(tiny_encoder(), [BIN, MC2, MC5, SQ, NQ])
    assert set(model.heads) == {"bin", "multiple_choice", "span"}
    assert model.heads["multiple_choice"].out_proj.out_features == 1  # a score per (context, choice) row
    assert model.heads["span"].qa_outputs.out_features == 2  # start and end logit per token


def test_choice_scores_pad_each_example_to_the_most_choices():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    out = choice_scores(scores, [2, 5])
    assert out.shape == (2, 5)
    assert out[0, :2].tolist() == [1.0, 2.0] and torch.isinf(out[0, 2:]).all()
    assert out[1].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("counts", [[2, 2], [5, 3, 4], [2, 5]])
def test_uniform_choice_scores_cost_one_per_example(counts):
    """Each example is scaled by the log of its own number of choices (3 of ARC's 4-way rows, say)."""
    scores = choice_scores(torch.zeros(sum(counts)), counts)
    labels = torch.tensor([c - 1 for c in counts])
    assert torch.allclose(example_losses(MC5, scores, labels, scale=True), torch.ones(len(counts)), atol=1e-6)
    raw = example_losses(MC5, scores, labels, scale=False)
    assert torch.allclose(raw, torch.tensor([math.log(c) for c in counts]), atol=1e-6)


def test_uniform_span_logits_cost_one_per_window():
    mask = torch.tensor([[1] * 7 + [0] * 3, [1] * 10])  # windows of 7 and 10 tokens, padded to 10
    logits = torch.zeros(2, 10, 2)
    labels = torch.tensor([[3, 4], [0, 0]])
    assert torch.allclose(example_losses(SQ, logits, labels, True, mask), torch.ones(2), atol=1e-6)
    raw = example_losses(SQ, logits, labels, False, mask)
    assert torch.allclose(raw, torch.tensor([math.log(7), math.log(10)]), atol=1e-6)  # padding is no position


def test_mixed_families_in_one_batch_match_hand_computation():
    """Classification, two multiple-choice datasets with 2 and 3-5 choices, and span windows: one encoder pass."""
    model = MultiTaskModel(tiny_encoder(), [BIN, MC2, MC5, SQ], dropout=0.0).eval()
    g = torch.Generator().manual_seed(1)
    rows = 2 + (2 + 2) + (5 + 3) + 2  # bin: 2 examples; mc2: 2 x 2 choices; mc5: 5 and 3 choices; sq: 2 windows
    input_ids = torch.randint(5, 60, (rows, 9), generator=g)
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, 6:] = 0
    segments = [
        Segment("bin", 0, 2, torch.tensor([1.0, 0.0])),
        Segment("mc2", 2, 6, torch.tensor([1, 0]), [2, 2]),
        Segment("mc5", 6, 14, torch.tensor([4, 2]), [5, 3]),
        Segment("sq", 14, 16, torch.tensor([[2, 3], [0, 0]])),
    ]
    loss, outputs = model(input_ids, attention_mask, segments)
    assert outputs["mc2"].shape == (2, 2) and outputs["mc5"].shape == (2, 5) and outputs["sq"].shape == (2, 9, 2)
    assert torch.isinf(outputs["mc5"][1, 3:]).all()

    with torch.no_grad():
        hidden = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        head = model.heads["multiple_choice"]
        score = head.out_proj(torch.tanh(head.dense(hidden[:, 0]))).squeeze(-1)
        expected = []
        bin_logits = model.heads["bin"].out_proj(torch.tanh(model.heads["bin"].dense(hidden[0:2, 0])))
        expected += (-torch.log_softmax(bin_logits, -1)[[0, 1], [1, 0]] / math.log(2)).tolist()
        for first, counts, labels in ((2, [2, 2], [1, 0]), (6, [5, 3], [4, 2])):
            for count, label in zip(counts, labels):
                nll = -torch.log_softmax(score[first:first + count], -1)[label]
                expected.append((nll / math.log(count)).item())
                first += count
        span = model.heads["span"].qa_outputs(hidden[14:16])
        for r, (s, e), n in ((0, (2, 3), 9), (1, (0, 0), 6)):
            s_nll = -torch.log_softmax(span[r, :n, 0], -1)[s]
            e_nll = -torch.log_softmax(span[r, :n, 1], -1)[e]
            expected.append(((s_nll + e_nll) / 2 / math.log(n)).item())
    assert len(expected) == 2 + 2 + 2 + 2  # the mean is over examples, not rows
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)

    loss.backward()  # the shared heads learn from every dataset of their family
    assert model.heads["multiple_choice"].out_proj.weight.grad.abs().sum() > 0
    assert model.heads["span"].qa_outputs.weight.grad.abs().sum() > 0


def test_shared_head_saved_once_with_its_tasks(tmp_path):
    model = MultiTaskModel(tiny_encoder(), [BIN, MC2, MC5, SQ, NQ])
    model.save_heads(tmp_path)
    index = json.loads((tmp_path / HEADS_INDEX).read_text())
    assert index["multiple_choice"] == {"type": "multiple_choice", "tasks": ["mc2", "mc5"]}
    assert index["span"]["tasks"] == ["sq", "nq"]
    target = MultiTaskModel(tiny_encoder(seed=3), [MC5])
    target.load_heads(tmp_path, [head_name(MC5)])
    assert torch.equal(target.heads["multiple_choice"].dense.weight, model.heads["multiple_choice"].dense.weight)


def test_torchrun_job_file_round_trips_tasks_of_every_family(tmp_path):
    """The multi-GPU launcher passes the tasks through JSON; they must come back equal (and hashable)."""
    from prefinetune.launch import read_job, write_job

    tasks = [BIN, REG, MC5, SQ]
    write_job(tmp_path / "job.json", tasks, {t.name: f"tok/{t.name}" for t in tasks}, "base", {"lr": 1.0}, "out",
              "log.tsv", "ck")
    job = read_job(tmp_path / "job.json")
    assert job["tasks"] == tasks and len({hash(t) for t in job["tasks"]}) == len(tasks)
    assert job["checkpoint_dir"] == "ck" and job["settings"] == {"lr": 1.0}
