"""collect / summarize / write_table on hand-made runs, the figures' files, and that every figure fits its canvas."""

import json
import math

import pandas as pd
import pytest

from prefinetune.analysis import (COLUMNS, collect, critical_table, efficiency_summary, read_train_logs, summarize,
                                  transfer_map, write_table)
from prefinetune.plotting import (comparison_figure, differences, efficiency_figure, loss_figure, plot_efficiency,
                                  plot_scaling, scaling_figure, transfer_figure, write_comparison)


def run(k, draw, target, seed, value, variant="main"):
    """A metrics.json record as a fine-tuning job writes it."""
    return {"variant": variant, "k": k, "draw": draw, "target": target, "seed": seed, "metric": "accuracy",
            "value": value, "metrics": {"accuracy": value}, "tasks": [] if k == 0 else ["t1", target][:k]}


# Two targets; the k = 0 baseline (draw 0) with two seeds, k = 2 with two draws of one seed.
RUNS = [
    run(2, 2, "b", 1, 0.8), run(0, 0, "a", 2, 0.7), run(2, 1, "a", 1, 0.8), run(0, 0, "b", 1, 0.3),
    run(2, 2, "a", 1, 0.6), run(0, 0, "a", 1, 0.5), run(2, 1, "b", 1, 0.4), run(0, 0, "b", 2, 0.5),
]


def write_runs(tmp_path, records):
    paths = []
    for i, record in enumerate(records):
        path = tmp_path / f"run{i}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(record))
        paths.append(str(path))
    return paths


@pytest.fixture
def table(tmp_path):
    return collect(write_runs(tmp_path, RUNS), variant="ablation")


def test_collect_columns_order_and_variant(table):
    assert list(table.columns) == COLUMNS == ["variant", "k", "draw", "target", "family", "seed", "percent", "metric",
                                              "value", "accuracy", "f1", "matthews", "pearson", "spearman",
                                              "exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum", "chance",
                                              "loss_start", "loss_end", "loss_chance", "failed"]
    assert len(table) == len(RUNS)
    keys = list(table[["k", "draw", "target", "seed"]].itertuples(index=False, name=None))
    assert keys == sorted(keys)
    assert keys[0] == (0, 0, "a", 1) and keys[-1] == (2, 2, "b", 1)
    assert set(table["variant"]) == {"ablation"}  # overrides "main", also for the shared k = 0 rows


def test_collect_names_file_with_missing_key(tmp_path):
    broken = run(1, 1, "a", 1, 0.5)
    del broken["seed"]
    paths = write_runs(tmp_path, [run(0, 0, "a", 1, 0.5), broken])
    with pytest.raises(ValueError, match=r"run1.*metrics\.json.*seed"):
        collect(paths, variant="main")


def test_summarize_per_target_and_mean(table):
    s = summarize(table).set_index(["target", "k"])
    a0 = s.loc[("a", 0)]
    assert (a0["mean"], a0["min"], a0["max"], a0["n"]) == pytest.approx((0.6, 0.5, 0.7, 2))
    assert a0["std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.5, 0.7
    assert s.loc[("b", 2), "mean"] == pytest.approx(0.6)
    # mean over targets: (k=0, seed 1) -> 0.4, (k=0, seed 2) -> 0.6; (k=2, draw 1) -> 0.6, (k=2, draw 2) -> 0.7
    assert s.loc[("mean", 0), "mean"] == pytest.approx(0.5)
    m2 = s.loc[("mean", 2)]
    assert (m2["mean"], m2["min"], m2["max"], m2["n"]) == pytest.approx((0.65, 0.6, 0.7, 2))
    assert m2["std"] == pytest.approx(math.sqrt(0.005))
    assert len(s) == 6  # 2 targets + "mean", each at k = 0 and k = 2


def test_write_table_round_trips(table, tmp_path):
    path = tmp_path / "out" / "scaling.csv"
    write_table(table, path)
    back = pd.read_csv(path)
    assert list(back.columns) == COLUMNS
    assert back["value"].tolist() == pytest.approx(table["value"].tolist())
    assert [p.name for p in path.parent.iterdir()] == ["scaling.csv"]  # no temporary left behind


def test_plot_scaling_writes_pdf_and_png(table, tmp_path):
    pdf, png = tmp_path / "fig" / "scaling.pdf", tmp_path / "fig" / "scaling.png"
    plot_scaling(table, pdf, png, title="test curve")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert pdf.stat().st_size > 1000 and png.stat().st_size > 1000


def test_collect_spreads_every_family_metric_into_its_own_column(tmp_path):
    span = {**run(0, 0, "squad", 1, 0.5), "family": "span", "metric": "f1",
            "metrics": {"exact_match": 0.4, "f1": 0.5}}
    cls = {**run(0, 0, "rte", 1, 0.7), "family": "classification",
           "metrics": {"accuracy": 0.7, "f1": 0.6, "matthews": 0.3}}
    table = collect(write_runs(tmp_path, [span, cls]), variant="main").set_index("target")
    assert table.loc["squad", "exact_match"] == 0.4 and table.loc["squad", "f1"] == 0.5
    assert math.isnan(table.loc["squad", "accuracy"]) and math.isnan(table.loc["rte", "exact_match"])
    assert table.loc["rte", "matthews"] == 0.3 and table.loc["rte", "family"] == "classification"
    assert (table["percent"] == 100).all()  # runs on the whole training split


def test_sample_efficiency_summary_and_figure(tmp_path):
    records = [{**run(k, d, t, s, 0.5 + 0.1 * k + 0.001 * p + 0.01 * s), "percent": p}
               for k, d in ((0, 0), (2, 1)) for t in ("a", "b") for p in (10, 50, 100) for s in (1, 2)]
    table = collect(write_runs(tmp_path, records), variant="sample_efficiency")
    stats = efficiency_summary(table).set_index(["target", "k", "percent"])
    assert len(stats) == 2 * 2 * 3
    assert stats.loc[("a", 2, 50), "mean"] == pytest.approx(0.5 + 0.2 + 0.05 + 0.015)  # mean of seeds 1, 2
    assert stats.loc[("a", 2, 50), "n"] == 2
    pdf, png = tmp_path / "se.pdf", tmp_path / "se.png"
    plot_efficiency(table, pdf, png, title="test efficiency")
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")


# -- figures fit their content ---------------------------------------------------------------------------------------
LONG_TITLE = "sample efficiency, tiny-roberta: fine-tuning on a share of the training data, per pre-finetuning k"


def study(targets, counts=(0, 3, 6, 12, 24), draws=3, seeds=2, percents=(100,)):
    """A table in the scaling.csv shape: a dip then a rise on every target, and the draws' task orders."""
    rows = [{"variant": "main", "k": k, "draw": 0 if k == 0 else d, "target": t, "seed": s, "metric": "accuracy",
             "percent": p, "value": 0.6 - 0.01 * min(k, 6) + 0.008 * max(k - 6, 0) + 0.002 * d + 0.003 * s
             + 0.0005 * p}
            for t in targets for k in counts for d in (range(1, draws + 1) if k else [0])
            for s in range(1, seeds + 1) for p in percents]
    pool = [f"task_{i:02d}" for i in range(24)]
    orders = {d: pool[d:] + pool[:d] for d in range(1, draws + 1)}
    return pd.DataFrame(rows), orders


def _inside_canvas(fig):
    """The title's and every legend's extent, asserted to lie inside the figure's canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    artists = [fig._suptitle, *fig.legends] if fig._suptitle is not None else list(fig.legends)
    assert fig._suptitle is not None and fig._suptitle.get_text()
    canvas = fig.bbox
    for artist in artists:
        box = artist.get_window_extent(renderer)
        assert box.x0 >= canvas.x0 - 1 and box.x1 <= canvas.x1 + 1, (artist, box, canvas)
        assert box.y0 >= canvas.y0 - 1 and box.y1 <= canvas.y1 + 1, (artist, box, canvas)
    return len(artists)


@pytest.mark.parametrize("targets", [["only"], ["a", "b", "c", "d"]], ids=["one panel", "several panels"])
def test_every_figure_keeps_its_title_and_legend_inside_the_canvas(targets):
    import matplotlib.pyplot as plt

    df, orders = study(targets)
    critical = critical_table(df, "main", n_boot=50)
    efficiency, _ = study(targets, percents=(10, 50, 100))
    logs = pd.DataFrame([{"k": k, "draw": d, "step": s, "loss": 1 / (1 + s) + d} for k in (3, 6, 12, 24)
                         for d in (1, 2, 3) for s in range(0, 100, 10)])
    figures = {
        "scaling": scaling_figure(df, LONG_TITLE, critical),
        "efficiency": efficiency_figure(efficiency, LONG_TITLE),
        "transfer": transfer_figure(transfer_map(df, orders, "main", n_boot=20), LONG_TITLE),
        "losses": loss_figure(logs, LONG_TITLE),
        "comparison": comparison_figure({"main": df, "ablation": df.assign(value=df["value"] + 0.01)}, LONG_TITLE,
                                        n_boot=20, level=0.9),
    }
    for name, fig in figures.items():
        with_legend = _inside_canvas(fig)
        assert with_legend == (1 if name == "transfer" else 2), name  # the title, and a legend where it has one
        plt.close(fig)


def test_scaling_figure_marks_an_identified_critical_point_only(tmp_path):
    df, _ = study(["a", "b"])
    critical = critical_table(df, "main", n_boot=50)
    assert (critical["status"] == "identified").all()
    fig = scaling_figure(df, "t", critical)
    labels = fig.legends[0].get_texts()
    assert {"hinge fit", "break-even k"} <= {t.get_text() for t in labels}
    flat = critical.assign(status="not identified")
    fig = scaling_figure(df, "t", flat)
    assert "hinge fit" not in {t.get_text() for t in fig.legends[0].get_texts()}
    assert sum("k_c not identified" == t.get_text() for ax in fig.axes for t in ax.texts) == 3


def test_train_logs_are_read_with_their_k_and_draw(tmp_path):
    paths = []
    for k, d in ((3, 1), (12, 2)):
        path = tmp_path / f"k{k}/draw{d}/train_log.tsv"
        path.parent.mkdir(parents=True)
        path.write_text("step\tloss\tlr\ttasks_in_update\tseconds\n25\t1.5\t0.001\t7\t0.1\n50\t1.2\t0.001\t8\t0.2\n")
        paths.append(path)
    logs = read_train_logs(paths)
    assert logs.to_dict("list") == {"k": [3, 3, 12, 12], "draw": [1, 1, 2, 2], "step": [25, 50, 25, 50],
                                    "loss": [1.5, 1.2, 1.5, 1.2]}
    with pytest.raises(ValueError, match="not a path of the form"):
        read_train_logs([tmp_path / "train_log.tsv"])


def test_comparison_writes_every_variants_critical_points_and_the_figure(tmp_path):
    df, _ = study(["a", "b"])
    tables, criticals = [], []
    for variant, shift in (("main", 0.0), ("no_loss_scaling", 0.02)):
        table = df.assign(variant=variant, value=df["value"] + shift * (df["k"] > 0))
        tables.append(tmp_path / f"{variant}.csv")
        criticals.append(tmp_path / f"{variant}_critical.csv")
        write_table(table, tables[-1])
        write_table(critical_table(table, variant, n_boot=30), criticals[-1])
    out = tmp_path / "ablations"
    write_comparison(["main", "no_loss_scaling"], tables, criticals, out / "comparison.csv", out / "comparison.pdf",
                     out / "comparison.png", "t", n_boot=30, level=0.9)
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison["variant"].tolist() == ["main"] * 3 + ["no_loss_scaling"] * 3
    assert comparison["target"].tolist() == ["a", "b", "mean"] * 2
    assert (out / "comparison.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
    diff = differences({"main": df, "shifted": df.assign(value=df["value"] + 0.02 * (df["k"] > 0))}, 50, 0.9)
    per_target = diff[diff["target"] != "mean"]
    assert sorted(per_target["k"].unique()) == [3, 6, 12, 24]  # k = 0 is the same model for every variant
    assert per_target["difference"].to_numpy() == pytest.approx(0.02)
    assert (per_target["lo"] <= 0.02 + 1e-9).all() and (per_target["hi"] >= 0.02 - 1e-9).all()


def test_scaling_figure_shows_failed_runs_as_crosses_left_out_of_the_mean():
    df, _ = study(["a"])
    df["failed"] = False
    df.loc[df.index[(df["k"] == 6)][0], ["value", "failed"]] = [0.0, True]  # one run at k = 6 failed at 0
    fig = scaling_figure(df, "t")
    assert "failed run (left out)" in {t.get_text() for t in fig.legends[0].get_texts()}
    mean_line = fig.axes[0].get_lines()[0]  # the mean over draws and seeds
    at6 = dict(zip(mean_line.get_xdata(), mean_line.get_ydata()))[6]
    assert at6 == pytest.approx(df[(df["k"] == 6) & ~df["failed"]]["value"].mean())
