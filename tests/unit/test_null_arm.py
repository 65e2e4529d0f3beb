"""The null arm: each family destroys what its labels say and keeps everything else, deterministically by seed; the
pre-finetuning stage trains on that, and on nothing a target is scored on; content transfer = main - null and its
interval. The tokenized data are test_families' fixtures (multiple choice with 3 to 5 choices, span windows)."""

import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prefinetune.batching import TaskArrays
from prefinetune.config import DEFAULT_TRAIN, SHUFFLED
from prefinetune.content import content_table, critical_by_curve, paired_runs, t_interval
from prefinetune.data import hold_out, load_tokenized
from prefinetune.families import family
from prefinetune.stages import null_labels, prefinetune
from prefinetune.subsets import draw_seed
from test_families import prepared  # noqa: F401  (the module-scoped fixture)


def arrays(root, tasks, name, rng=None):
    return TaskArrays(load_tokenized(root / "tok" / name, "train"), family(tasks[name]), rng)


def test_classes_and_answers_are_permuted_within_the_task(prepared):  # noqa: F811
    root, tasks, _ = prepared
    for name in ("nli", "piqa"):
        true, null = arrays(root, tasks, name), arrays(root, tasks, name, np.random.default_rng(0))
        assert Counter(null.labels.tolist()) == Counter(true.labels.tolist())  # the same labels, other examples
        assert (null.labels != true.labels).mean() > 0.3
        assert np.array_equal(null.tokens, true.tokens) and len(null) == len(true)  # the same inputs


def test_a_multiple_choice_answer_stays_among_its_examples_choices(prepared):  # noqa: F811
    root, tasks, _ = prepared
    true, null = arrays(root, tasks, "arc"), arrays(root, tasks, "arc", np.random.default_rng(0))
    assert set(true.choices.tolist()) == {3, 4, 5}
    assert (null.labels < null.choices).all() and (null.labels >= 0).all()
    assert (null.labels != true.labels).mean() > 0.3


def test_a_span_answer_keeps_its_length_and_window_and_moves(prepared):  # noqa: F811
    """Each window that holds the answer gets a span of the same length on its own passage tokens; a window
    without it keeps (0, 0)."""
    root, tasks, _ = prepared
    for name in ("squad", "newsqa"):
        table = load_tokenized(root / "tok" / name, "train")
        true, null = arrays(root, tasks, name), arrays(root, tasks, name, np.random.default_rng(1))
        answered = (true.labels != 0).any(1)
        assert 0 < answered.sum() < len(true)  # long passages: some windows without the answer
        assert (null.labels[~answered] == 0).all()
        assert np.array_equal(np.diff(null.labels, axis=1), np.diff(true.labels, axis=1))  # same lengths
        for (start, end), offsets in zip(null.labels[answered], np.array(table["offsets"], dtype=object)[answered]):
            inside = [tuple(offsets[t]) != (-1, -1) for t in range(start, end + 1)]
            assert all(inside)  # on the window's passage
        assert (null.labels[answered, 0] != true.labels[answered, 0]).mean() > 0.5


def test_summaries_are_permuted_and_regression_values_too():
    fam = family("summarization")
    summaries = [np.arange(n) for n in (3, 5, 7, 9, 11, 13)]
    shuffled = fam.data.shuffled_labels(summaries, None, np.random.default_rng(0))
    assert sorted(map(len, shuffled)) == sorted(map(len, summaries)) and list(map(len, shuffled)) != [3, 5, 7, 9, 11, 13]
    values = np.linspace(0, 5, 50).astype("float32")
    null = family("regression").data.shuffled_labels(values, None, np.random.default_rng(0))
    assert sorted(null) == sorted(values) and np.var(null) == np.var(values)  # loss scaling unchanged


def test_the_null_data_is_deterministic_and_the_same_at_every_k_of_a_draw(prepared):  # noqa: F811
    """A task's labels are shuffled from the run's seed and the task's name: the same whatever else is in the
    subset (so nested subsets stay nested), another draw (seed) another shuffle."""
    root, tasks, _ = prepared
    data = {name: load_tokenized(root / "tok" / name, "train") for name in ("nli", "arc")}
    small = null_labels({"nli": data["nli"]}, [tasks["nli"]], seed=draw_seed(0, 1))
    large = null_labels(data, [tasks["nli"], tasks["arc"]], seed=draw_seed(0, 1))
    other = null_labels(data, [tasks["nli"], tasks["arc"]], seed=draw_seed(0, 2))
    assert np.array_equal(small["nli"].labels, large["nli"].labels)
    assert not np.array_equal(large["nli"].labels, other["nli"].labels)
    assert draw_seed(0, 1) != draw_seed(0, 2) and draw_seed(0, 1) == draw_seed(0, 1) != draw_seed(1, 1)


def test_the_held_out_slice_comes_from_the_training_split_and_leaves_it(prepared):  # noqa: F811
    root, _, _ = prepared
    for name, count in (("nli", 5), ("squad", 256)):
        train = load_tokenized(root / "tok" / name, "train")
        rest, held = hold_out(train, count, name)
        examples = lambda ds: set(ds["example"]) if "example" in ds.column_names else None  # noqa: E731
        assert len(rest) + len(held) == len(train) and len(held) > 0
        if name == "squad":  # whole examples (all their windows) go, at most a tenth of them
            assert not examples(rest) & examples(held) and len(examples(held)) == 80 // 10
        else:
            assert len(held) == 5
        again = hold_out(train, count, name)[1]
        assert again["input_ids"] == held["input_ids"]  # the same slice in every model


def test_convergence_reads_no_validation_split(prepared, tmp_path):  # noqa: F811
    """Pre-finetuning under budget convergence, main and null arm, with every validation split (what targets are
    scored on) removed from the tokenized data: it trains, validates and stops on its held-out slices alone."""
    root, tasks, _ = prepared
    names = ["nli", "squad", "arc"]
    tokenized = {}
    for name in names:
        shutil.copytree(root / "tok" / name, tmp_path / "tok" / name)
        for split in ("validation", "validation_examples"):
            shutil.rmtree(tmp_path / "tok" / name / split, ignore_errors=True)
        tokenized[name] = str(tmp_path / "tok" / name)
    settings = {**DEFAULT_TRAIN, "max_steps": 6, "batch_size": 8, "lr": 1e-3, "budget": "convergence",
                "eval_every": 2, "patience": 5, "eval_examples": 4, "log_every": 2, "report_to": []}
    for labels in (None, SHUFFLED):
        out = tmp_path / f"model_{labels}"
        prefinetune([tasks[n] for n in names], tokenized, str(root / "model"), {**settings, "labels": labels},
                    str(out), str(tmp_path / f"log_{labels}.tsv"))
        log = pd.read_csv(tmp_path / f"log_{labels}.tsv", sep="\t")
        assert log.val_loss.notna().sum() == 3  # validated at updates 2, 4 and 6


# -- content transfer: main - null, paired by (k, draw) -----------------------------------------------------------
def tables(effect=0.1, noise=0.01, draws=4, seeds=2, counts=(0, 2, 4, 8, 16)):
    """A main and a null table of one target: the null arm flat at the baseline, the main curve rising by
    ``effect`` per doubling of k, a shared draw offset and seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for k in counts:
        for d in ([0] if k == 0 else range(1, draws + 1)):
            offset = rng.normal(0, noise)
            for s in range(1, seeds + 1):
                base = 0.6 + (offset if k else 0) + rng.normal(0, noise)
                gain = effect * np.log2(k) if k else 0.0
                rows.append({"k": k, "draw": d, "seed": s, "target": "t", "metric": "accuracy",
                             "main": base + gain, "null": base + rng.normal(0, noise) * (k > 0)})
    df = pd.DataFrame(rows)
    main = df.drop(columns="null").rename(columns={"main": "value"})
    null = df.drop(columns="main").rename(columns={"null": "value"})
    return main, null


def test_content_transfer_pairs_models_and_gives_a_t_interval_over_draws():
    main, null = tables()
    paired = paired_runs(main, null)
    assert [name for name, _, _ in paired] == ["t", "mean"]
    table = content_table(paired)
    rows = table[table.target == "t"].set_index("k")
    assert list(rows.index) == [2, 4, 8, 16] and (rows.n_draws == 4).all()
    assert rows.content.to_numpy() == pytest.approx(0.1 * np.log2([2, 4, 8, 16]), abs=0.03)
    assert (rows.content_lo > 0).all() and (rows.content_lo < rows.content).all() and (rows.content < rows.content_hi).all()
    # the interval is Student's t over the draws' paired differences (scipy's quantile, to Monte-Carlo error)
    cells = paired[0][2].query("k == 16").groupby("draw")[["main", "null"]].mean()
    diff = (cells["main"] - cells["null"]).to_numpy()
    half = stats.t.ppf(0.95, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    assert rows.loc[16, "content_hi"] - rows.loc[16, "content"] == pytest.approx(half, rel=0.01)
    assert np.isnan(t_interval(np.array([0.1]), 0.9, np.random.default_rng(0))).all()  # one draw: no interval


def test_no_content_when_the_labels_teach_nothing():
    main, null = tables(effect=0.0)
    rows = content_table(paired_runs(main, null))
    assert ((rows.content_lo < 0) & (0 < rows.content_hi)).mean() >= 0.75


def test_critical_points_of_the_main_and_null_curves_and_of_their_difference():
    main, null = tables()
    table = critical_by_curve(paired_runs(main, null), n_boot=50)
    assert table.columns[0] == "curve" and list(table.curve.unique()) == ["main", "null_arm", "content"]
    assert list(table.variant.unique()) == ["main", "null_arm", "main - null"]
    rows = table.set_index(["curve", "target"])
    assert rows.loc[("content", "t"), "baseline"] == 0  # the shared k = 0: no difference
    assert rows.loc[("content", "t"), "slope_line"] > 0 and abs(rows.loc[("null_arm", "t"), "slope_line"]) < 0.01
    assert (rows.n_draws == 4).all()
