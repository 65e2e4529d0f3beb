"""The embedded default, run for real through Snakemake on 2 cores, then probed for what a researcher relies on:
the curve, the table and the report; nothing redone without cause; exactly the affected jobs redone with cause;
ablations in their own folders; identical metrics when a job is rerun.

The tests share one run (minutes) and are written to be read, and run, top to bottom.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket

import pandas as pd
import pytest
import torch
import yaml

from prefinetune.analysis import COLUMNS
from prefinetune.breakpoint import COLUMNS as CRITICAL_COLUMNS
from prefinetune.data import load_tokenized
from prefinetune.disk import folder_bytes
from workflow_helpers import REPO, job_counts, load_config, snakemake, stop_at_first_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(demo_local):
    return demo_local  # the README's demo command, run once per session (conftest.py)


def dry_run(workdir, *args):
    result = snakemake(workdir, "-n", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_curve_table_and_report_are_written(demo):
    config = load_config()
    results = demo / "results"
    assert (results / "scaling_curve.pdf").read_bytes().startswith(b"%PDF")
    assert (results / "scaling_curve.png").read_bytes().startswith(b"\x89PNG")
    report = (results / "report.html").read_text()
    assert "scaling_curve.png" in report and "scaling.csv" in report

    table = pd.read_csv(results / "scaling.csv")
    assert list(table.columns) == COLUMNS
    n_runs = len(config["targets"]) * config["finetune_seeds"]
    trained = [k for k in config["task_counts"] if k > 0]
    assert len(table) == n_runs * (1 + len(trained) * config["draws"])
    assert sorted(table.k.unique()) == sorted(config["task_counts"])
    assert set(table.target) == set(config["targets"]) and set(table.metric) == {"accuracy", "f1"}
    assert set(table.family) == {"classification", "span"}  # multiple choice: the sample-efficiency target
    assert table.value.between(0, 1).all()
    span = table[table.family == "span"]
    assert span.exact_match.notna().all() and span.accuracy.isna().all() and (span.value == span.f1).all()
    pair = table[table.family == "classification"]
    assert (pair.value == pair.accuracy).all() and pair.matthews.notna().all() and pair.exact_match.isna().all()
    assert (table[table.k == 0].draw == 0).all()  # the baseline is computed once, shared by all draws


def test_the_classification_target_is_learnt_at_k0_on_every_seed(demo):
    """The demo measures something: its sentence-pair target is learnt from its own 200 examples, without
    pre-finetuning (Matthews correlation above 0.2 on every seed), not predicted as one constant class."""
    table = pd.read_csv(demo / "results" / "scaling.csv")
    baseline = table[(table.k == 0) & (table.target == "syn_target_pair")]
    assert len(baseline) == load_config()["finetune_seeds"]
    assert (baseline.matthews > 0.2).all(), baseline[["seed", "accuracy", "matthews"]].to_dict("records")


def test_critical_point_transfer_and_loss_curves_are_in_the_report(demo):
    config = load_config()
    results = demo / "results"
    critical = pd.read_csv(results / "critical_point.csv")
    assert list(critical.columns) == CRITICAL_COLUMNS
    assert critical.target.tolist() == [*sorted(config["targets"]), "mean"]
    assert (critical.n_k == 5).all() and (critical.n_draws == 3).all() and (critical.n_runs == 13).all()
    # 3 draws: the analysis answers: a bootstrap test of a breakpoint and intervals in every row
    assert not critical.reason.fillna("").str.contains("too few").any()
    assert critical[["p_breakpoint", "slope_line_lo", "slope_line_hi"]].notna().all().all()
    assert (critical.slope_line_lo < critical.slope_line_hi).all()

    transfer = pd.read_csv(results / "transfer.csv")
    assert set(transfer.target) == {*config["targets"], "mean"}
    assert set(transfer.task) == set(config["pool"]) | set(config["targets"])
    targets = transfer[transfer.task.isin(config["targets"])]  # the paper's protocol: in every subset
    assert (~targets.identified).all() and targets.reason.str.startswith("in every subset").all()
    assert transfer.loc[~transfer.identified, "effect"].isna().all()
    identified = transfer[transfer.identified]  # 3 draws identify the tasks that some draws hold at some k
    assert len(identified) and identified[["effect", "effect_lo", "effect_hi"]].notna().all().all()

    for name in ("transfer", "prefinetune_loss"):
        assert (results / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert (results / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    # the curve was drawn from the critical-point table
    assert (results / "scaling_curve.png").stat().st_mtime >= (results / "critical_point.csv").stat().st_mtime
    report = (results / "report.html").read_text()
    for entry, caption in (("critical_point.csv", "The critical point of each target"),
                           ("transfer.png", "Per-task transfer: for each pool task"),
                           ("prefinetune_loss.png", "Pre-finetuning loss against the update"),
                           ("scaling_curve.png", "Where the critical")):
        assert entry in report and caption in report, entry


def test_subsets_are_nested_and_recorded(demo):
    config = load_config()
    orders = [yaml.safe_load((demo / f"results/subsets/draw{d}.yaml").read_text())["order"] for d in (1, 2)]
    assert orders[0] != orders[1]
    for draw, order in enumerate(orders, start=1):
        assert order[:2] == config["targets"]  # the paper's protocol: targets in every subset
        previous: set[str] = set()
        for k in sorted(k for k in config["task_counts"] if k > 0):
            summary = json.loads((demo / f"results/prefinetune/k{k}/draw{draw}/model/prefinetune.json").read_text())
            assert summary["tasks"] == order[:k]
            assert previous <= set(summary["tasks"])
            previous = set(summary["tasks"])


def test_every_job_left_a_log_and_a_benchmark_and_no_temporaries(demo):
    assert (demo / "logs/results/prefinetune/k16/draw1.log").stat().st_size > 0
    jobs = sum(job_counts(dry_run(demo, "--forceall")).values())
    assert len(list((demo / "benchmarks").rglob("*.tsv"))) == jobs - 1  # every job but `all` is benchmarked
    assert not [p for p in demo.rglob("*.tmp")]  # atomic outputs: no half-written leftovers


def test_heterogeneous_updates_mix_tasks(demo):
    log = pd.read_csv(demo / "results/prefinetune/k16/draw1/train_log.tsv", sep="\t")
    assert log.tasks_in_update.min() > 5
    assert log.loss.iloc[-1] < log.loss.iloc[0]


def test_the_null_arm_pairs_each_model_with_one_on_shuffled_labels(demo):
    """`snakemake null` on the finished demo (its README command): the models of the largest k again, on the same
    subsets with the same seeds and their labels shuffled, fine-tuned like the curve (k = 0 shared); content
    transfer per target with its interval over the 3 draws, the three curves' critical points, the figure and the
    report's captions. The main curve is not touched."""
    config = load_config()
    largest = max(config["task_counts"])
    before = (demo / "results/scaling.csv").read_bytes()
    result = snakemake(demo, "--cores", "2", "null")
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr) == {"prefinetune": 3, "finetune": 6, "aggregate": 1,
                                                         "analyse_null": 1, "plot_null": 1, "null": 1}
    assert (demo / "results/scaling.csv").read_bytes() == before
    null = pd.read_csv(demo / "results/null/scaling.csv")
    assert set(null.variant) == {"null_arm"} and sorted(null.k.unique()) == [0, largest]
    main = pd.read_csv(demo / "results/scaling.csv")
    pd.testing.assert_frame_equal(null[null.k == 0].drop(columns="variant").reset_index(drop=True),
                                  main[main.k == 0].drop(columns="variant").reset_index(drop=True))  # k = 0 shared
    for draw in (1, 2, 3):  # the same subset and seed as the main model, labels shuffled
        runs = [json.loads((demo / f"{root}/prefinetune/k{largest}/draw{draw}/model/prefinetune.json").read_text())
                for root in ("results", "results/null")]
        assert runs[0]["tasks"] == runs[1]["tasks"] and {**runs[0]["settings"], "labels": "shuffled"} == runs[1]["settings"]
    seeds = {json.loads((demo / f"results/prefinetune/k{k}/draw{d}/model/prefinetune.json").read_text())["settings"]["seed"]
             for k in (3, largest) for d in (1, 2)}
    assert len(seeds) == 2  # one seed per draw, the same at every k
    content = pd.read_csv(demo / "results/null/content_transfer.csv").set_index("target")
    assert set(content.index) == {*config["targets"], "mean"} and (content.k == largest).all()
    assert (content.n_draws == config["draws"]).all()
    assert ((content.content_lo < content.content) & (content.content < content.content_hi)).all()
    assert content.content.to_numpy() == pytest.approx((content["main"] - content["null"]).to_numpy())
    by_curve = pd.read_csv(demo / "results/null/critical_point_by_curve.csv")
    assert list(by_curve.columns) == ["curve", *CRITICAL_COLUMNS]
    assert by_curve.curve.value_counts().to_dict() == {"main": 3, "null_arm": 3, "content": 3}
    assert (demo / "results/null/null_arm.png").read_bytes().startswith(b"\x89PNG")
    report = snakemake(demo, "null", "--report", "results/null/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (demo / "results/null/report.html").read_text()
    for entry, caption in (("null_arm.png", "The main curve and the null arm"),
                           ("content_transfer.csv", "What the pre-finetuning tasks' labels teach")):
        assert entry in html and caption in html, entry


def test_nothing_to_do_after_a_full_run_even_when_code_changes(demo):
    assert "Nothing to be done" in dry_run(demo)
    for path in ("workflow_scripts/prefinetune.py", "workflow_scripts/plot.py", "src/prefinetune/plotting.py"):
        (REPO / path).touch()
    assert "Nothing to be done" in dry_run(demo)


def _with_config(workdir, change):
    config = load_config(workdir / "config.yaml")
    change(config)
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# what a new fine-tuning or pre-finetuning run redoes downstream, once each
CURVE_JOBS = {"aggregate": 1, "analyse": 1, "plot": 1, "plot_transfer": 1, "plot_losses": 1, "all": 1}


def test_adding_a_task_count_schedules_only_the_new_jobs(demo):
    changed = _with_config(demo, lambda c: c["task_counts"].append(4))
    counts = job_counts(dry_run(demo, "--configfile", str(changed)))
    assert counts == {"prefinetune": 3, "finetune": 6, **CURVE_JOBS}


def test_changing_a_hyperparameter_redoes_exactly_what_it_affects(demo):
    changed = _with_config(demo, lambda c: c["prefinetune"].__setitem__("lr", 1.0e-4))
    counts = job_counts(dry_run(demo, "--configfile", str(changed)))
    assert counts == {"prefinetune": 12, "finetune": 24, **CURVE_JOBS}

    changed = _with_config(demo, lambda c: c["finetune"].__setitem__("epochs", 2))
    counts = job_counts(dry_run(demo, "--configfile", str(changed)))
    downstream = {job: n for job, n in CURVE_JOBS.items() if job != "plot_losses"}  # the pre-finetuning logs stay
    assert counts == {"finetune": 24, "finetune_baseline": 2, **downstream}


def _set(path, value):
    """A config change: set the dotted key ``path`` (creating sections as needed) to ``value``."""
    def change(config):
        *sections, key = path.split(".")
        for section in sections:
            config = config.setdefault(section, {})
        config[key] = value
    return change


def test_settings_that_do_not_change_a_result_rerun_nothing(demo):
    """Run options (log and checkpoint intervals, evaluation batch size), settings a rule never reads, the plan's
    throughput and the Slurm resources: each changed alone leaves a dry run with nothing to do."""
    changes = {
        "prefinetune.log_every": 7, "prefinetune.checkpoint_every": 3, "prefinetune.eval_batch_size": 5,
        "prefinetune.max_answer_tokens": 5, "prefinetune.carry_heads": True, "prefinetune.epochs": 3,
        "finetune.log_every": 7, "finetune.checkpoint_every": 3, "finetune.eval_batch_size": 5,
        "finetune.seed": 9, "finetune.temperature": 2.0,  # the seed wildcard decides; one task: no mixing
        "sample_efficiency.seed": 5,  # orders the shares of the study, not the main curve's whole splits
        "plan.mfu": 0.5, "resources.finetune.runtime": "20m",
        "plan.runtime_safety": 3.0, "plan.runtime_floor": "30m",  # what the jobs ask Slurm for
        "allow_cpu": False,  # whether a job that sees no GPU may train on the CPU
    }
    for path, value in changes.items():
        out = dry_run(demo, "--configfile", str(_with_config(demo, _set(path, value))))
        assert "Nothing to be done" in out, f"{path}: {job_counts(out)}"


def _reversed(value):
    """The same config with the keys of every mapping in reverse order (lists keep theirs)."""
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(list(value))}
    return [_reversed(v) for v in value] if isinstance(value, list) else value


def test_reordering_a_configs_keys_reruns_nothing(demo):
    """Params are compared as plain data with sorted keys: the same settings listed in another order (the model
    section's too) leave a dry run with nothing to do."""
    def reverse(config):
        reversed_config = _reversed(config)
        config.clear()
        config.update(reversed_config)

    reordered = _with_config(demo, reverse)
    text = reordered.read_text()
    assert text.index("resources:") < text.index("registry:")  # the file really lists its keys in another order
    assert "Nothing to be done" in dry_run(demo, "--configfile", str(reordered))


def test_a_reference_model_is_fine_tuned_like_k0_beside_the_curve(demo, tmp_path):
    """A published checkpoint, stood in for by a model built here and given by path: it is downloaded, its targets
    tokenized with its own tokenizer and fine-tuned with the seeds and settings of k = 0, all under paths that name
    it; its runs are rows reference:<name> of scaling.csv, bands on the curve and in the report, and the critical
    point and transfer map stay exactly as they were. On a copy of the finished run, which it leaves as it is."""
    from prefinetune.analysis import split_references
    from prefinetune.models import fetch, texts_of
    from prefinetune.plotting import scaling_figure

    config = load_config()
    work = tmp_path / "work"
    shutil.copytree(demo, work, symlinks=True)  # copy2: modification times kept, so nothing else looks stale
    standin = tmp_path / "standin"  # another vocabulary size, so another tokenizer than the demo model's
    fetch({"name": "standin", "build": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                        "intermediate_size": 64, "vocab_size": 700, "seed": 1}}, standin,
          texts=texts_of([work / "resources/datasets" / t for t in config["targets"]]))
    mine = tmp_path / "reference.yaml"
    mine.write_text(yaml.safe_dump({"reference_models": [{"name": "standin", "path": str(standin)}]}))

    out = dry_run(work, "--configfile", str(mine))
    downstream = {job: n for job, n in CURVE_JOBS.items() if job != "plot_losses"}
    assert job_counts(out) == {"download_reference": 1, "tokenize_reference": 2, "finetune_reference": 2, **downstream}
    for block in out.split("\nrule ")[1:]:  # every output of a reference job names the model
        if block.startswith(("download_reference", "tokenize_reference", "finetune_reference")):
            outputs = block.split("output: ", 1)[1].split("\n", 1)[0].split(", ")
            assert all("/standin" in o for o in outputs), outputs

    result = snakemake(work, "--cores", "2", "--configfile", str(mine))
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = demo / "results", work / "results"
    table = pd.read_csv(after / "scaling.csv")
    curve, references = split_references(table)
    original = pd.read_csv(before / "scaling.csv")
    pd.testing.assert_frame_equal(curve.reset_index(drop=True), original)  # the curve's rows as they were
    assert len(references) == 2 and set(references.variant) == {"reference:standin"} and references.k.isna().all()
    k0 = original[original.k == 0]
    assert sorted(zip(references.target, references.seed)) == sorted(zip(k0.target, k0.seed))
    assert (references.draw == 0).all() and references.value.between(0, 1).all()
    for name in ("critical_point.csv", "transfer.csv"):  # reference rows are no point of the curve
        assert (after / name).read_bytes() == (before / name).read_bytes(), name

    run = json.loads((after / "reference/standin/syn_target_pair/seed1/metrics.json").read_text())
    assert run["encoder"]["path"] == "resources/models/standin" and run["model"] == "standin" and run["k"] is None
    baseline = json.loads((after / "finetune/k0/syn_target_pair/seed1/metrics.json").read_text())
    settings = ("steps", "train_examples", "percent", "head")
    assert {key: run[key] for key in settings} == {key: baseline[key] for key in settings}  # fine-tuned like k = 0
    own, main = (load_tokenized(after / "tokenized" / m / "syn_target_pair", "train")["input_ids"][0]
                 for m in ("standin", config["model"]["name"]))
    assert own != main  # tokenized with its own tokenizer, in a folder of its own

    figure = scaling_figure(table, "test")
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "standin (reference), mean ± std" in legend
    report = snakemake(work, "--configfile", str(mine), "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (after / "report.html").read_text()
    assert "are the reference models of the config" in html and "is a horizontal band" in html
    assert "Nothing to be done" in dry_run(work, "--configfile", str(mine))
    mine.write_text(yaml.safe_dump({"reference_models": [{"path": str(standin), "name": "standin"}]}, sort_keys=False))
    assert "Nothing to be done" in dry_run(work, "--configfile", str(mine))  # its keys in another order


def test_each_result_changing_setting_reruns_exactly_the_jobs_it_affects(demo):
    curve = {job: n for job, n in CURVE_JOBS.items() if job != "plot_losses"}  # the loss curves: pre-finetuning's
    one_target = {"finetune": 12, "finetune_baseline": 1, **curve}  # the runs of one of the two targets
    every_run = {"finetune": 24, "finetune_baseline": 2, **curve}
    every_model = {"prefinetune": 12, "finetune": 24, **CURVE_JOBS}  # the baseline does not depend on pre-finetuning
    cases = {
        "finetune_overrides.syn_target_span.epochs": (2, one_target),
        "finetune_overrides.syn_target_span.max_steps": (10, one_target),
        "finetune_overrides.syn_target_pair.lr": (5e-4, one_target),
        "finetune.max_answer_tokens": (5, one_target),  # decoding: span targets only
        "finetune.carry_heads": (True, every_run),
        "finetune.dropout": (0.2, every_run),
        "prefinetune.temperature": (2.0, every_model),
        "prefinetune.seed": (3, every_model),
    }
    for path, (value, expected) in cases.items():
        out = dry_run(demo, "--configfile", str(_with_config(demo, _set(path, value))))
        assert job_counts(out) == expected, path
        if expected == one_target:  # and they are that target's runs
            target = path.split(".")[1] if path.startswith("finetune_overrides") else "syn_target_span"
            runs = [line for line in out.splitlines() if line.strip().startswith("output: results/finetune/")]
            assert len(runs) == 12 + 1 and all(f"/{target}/" in line for line in runs), path
    # an override equal to the default changes nothing
    same = _set("finetune_overrides.syn_target_span.epochs", load_config()["finetune"]["epochs"])
    assert "Nothing to be done" in dry_run(demo, "--configfile", str(_with_config(demo, same)))


def test_ablations_reuse_data_and_train_their_own_models(demo):
    counts = job_counts(dry_run(demo, "ablations"))
    assert set(counts) == {"prefinetune", "finetune", "aggregate", "analyse", "plot", "plot_transfer", "plot_losses",
                           "compare_ablations", "ablations"}

    target = "results/ablations/homogeneous_batches/prefinetune/k10/draw1/train_log.tsv"
    scaling_off = "results/ablations/no_loss_scaling/prefinetune/k3/draw1/model"
    result = snakemake(demo, "--cores", "2", target, scaling_off)
    assert result.returncode == 0, result.stderr[-3000:]
    log = pd.read_csv(demo / target, sep="\t")
    assert (log.tasks_in_update == 1).all()  # grad_accum 1: each update holds one task
    summary = json.loads((demo / scaling_off / "prefinetune.json").read_text())
    assert summary["settings"]["loss_scaling"] is False
    main = json.loads((demo / "results/prefinetune/k3/draw1/model/prefinetune.json").read_text())
    assert main["tasks"] == summary["tasks"] and main["settings"]["loss_scaling"] is True


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rerunning_jobs_reproduces_weights_and_metrics(demo):
    model = demo / "results/prefinetune/k10/draw1/model/model.safetensors"
    metrics = demo / "results/finetune/k10/draw1/syn_target_span/seed1/metrics.json"
    before_model, before_metrics = _digest(model), json.loads(metrics.read_text())
    result = snakemake(demo, "--cores", "2", "--forcerun", "prefinetune", "finetune", "--",
                       str(metrics.relative_to(demo)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prefinetune" in result.stdout + result.stderr
    assert _digest(model) == before_model
    assert json.loads(metrics.read_text()) == before_metrics


def test_sample_efficiency_on_nested_fractions_of_a_held_out_target(demo):
    """The study on a smaller grid (2 percents, 1 seed), from the original model and all 12 pre-finetuned ones;
    its target is the embedded default's multiple-choice task, held out of the pool."""
    changed = _with_config(demo, lambda c: (c["sample_efficiency"].__setitem__("percents", [50, 100]),
                                            c.__setitem__("finetune_seeds", 1)))
    result = snakemake(demo, "sample_efficiency", "--cores", "2", "--configfile", str(changed))  # target first:
    # --configfile takes several values and would read the target as a config file
    assert result.returncode == 0, result.stderr[-3000:]
    out = demo / "results/sample_efficiency"
    assert (out / "sample_efficiency.pdf").read_bytes().startswith(b"%PDF")
    table = pd.read_csv(out / "sample_efficiency.csv")
    assert len(table) == 2 * (1 + 12) and sorted(table.percent.unique()) == [50, 100]
    assert set(table.target) == {"syn_target_mc"} and not set(table.target) & set(load_config()["pool"])
    assert set(table.family) == {"multiple_choice"} and (table.value == table.accuracy).all()
    runs = {p: json.loads((out / f"k0/syn_target_mc/pct{p}/seed1/metrics.json").read_text()) for p in (50, 100)}
    assert runs[50]["train_examples"] == 100 and runs[100]["train_examples"] == 200
    assert runs[50]["percent"] == 50 and runs[50]["steps"] < runs[100]["steps"]


def test_sample_efficiency_seed_reruns_only_the_shares(demo):
    """After the study above: a new sample_efficiency.seed reorders the 50 % shares (13 runs); the 100 % runs,
    which train on the whole split, and the main curve stay as they are."""
    def change(c):
        c["sample_efficiency"].update(percents=[50, 100], seed=7)
        c["finetune_seeds"] = 1
    counts = job_counts(dry_run(demo, "sample_efficiency", "--configfile", str(_with_config(demo, change))))
    assert counts == {"finetune_fraction": 12, "finetune_fraction_baseline": 1, "aggregate_efficiency": 1,
                      "plot_efficiency": 1, "sample_efficiency": 1}
    # the main curve: the same jobs as with the seed unchanged (none, unless a test above forced a rerun of some)
    unchanged = job_counts(dry_run(demo))
    assert job_counts(dry_run(demo, "--configfile", str(_with_config(demo, _set("sample_efficiency.seed", 7))))) == unchanged


def test_a_job_stopped_by_sigterm_resumes_when_rerun(demo):
    """SIGTERM to every process of a running pre-finetuning job (what Slurm does at a time limit or preemption);
    the failed job leaves a checkpoint outside its outputs, and the rerun resumes to the very same weights."""
    job = "results/prefinetune/k10/draw2"
    model, log_tsv = demo / job / "model/model.safetensors", demo / job / "train_log.tsv"
    before_model, before_log = _digest(model), [r.split("\t")[:-1] for r in log_tsv.read_text().splitlines()]
    state = demo / "checkpoints" / job / "state.pt"
    # the stopped run checkpoints every 25 updates (a run option), so that 125 of its 150 updates (over 4 s here)
    # are left when the first checkpoint appears, and the SIGTERM lands while it trains
    often = _with_config(demo, _set("prefinetune.checkpoint_every", 25))
    stop_at_first_checkpoint(demo, ["--configfile", str(often), "--forcerun", "prefinetune", "--", f"{job}/model"],
                             state, job, jitter=1.0, poll=0.02)
    assert state.exists() and not model.exists()  # Snakemake removed the failed job's outputs, not the checkpoint

    result = snakemake(demo, "--cores", "1", f"{job}/model")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoints/" in (demo / "logs" / f"{job}.log").read_text()
    assert _digest(model) == before_model
    assert [r.split("\t")[:-1] for r in log_tsv.read_text().splitlines()] == before_log
    assert not state.parent.exists()  # removed once the model was written


def test_a_resumed_job_keeps_every_attempts_log_and_one_live_record(demo):
    """After the test above: the job's history of attempts holds each attempt after its own header (the first
    run, the stopped one, the resumed one), while Snakemake's log holds the last; its live record (train_log.tsv
    as it trained, TensorBoard events) holds every logged update once, with the values of the output log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job = "results/prefinetune/k10/draw2"
    live = demo / "logs" / job
    history = (live / "attempts.log").read_text()
    attempts = history.split("=== attempt started ")[1:]
    assert len(attempts) == 3, history[:3000]
    assert "stop signal (SIGTERM)" in attempts[1] and "resuming from checkpoints/" in attempts[2]
    assert (demo / "logs" / f"{job}.log").read_text() == "=== attempt started " + attempts[2]
    output = pd.read_csv(demo / job / "train_log.tsv", sep="\t")
    assert (live / "train_log.tsv").read_text() == (demo / job / "train_log.tsv").read_text()
    events = EventAccumulator(str(live))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/train")]
    assert steps == sorted(set(steps)) == list(output.step)
    assert [round(e.value, 6) for e in events.Scalars("loss/train")] == pytest.approx(list(output.loss), abs=1e-6)


def test_a_fine_tuning_job_stopped_by_sigterm_resumes_when_rerun(demo):
    """As pre-finetuning: SIGTERM to a running fine-tuning job saves a checkpoint outside its outputs, and the
    rerun resumes to the very same metrics and log. The stopped run checkpoints every 5 updates, through a
    changed config (a run option: it does not make the job rerun, nor invalidate the checkpoint)."""
    run = "results/finetune/k10/draw2/syn_target_span/seed1"
    metrics, log_tsv = demo / run / "metrics.json", demo / run / "train_log.tsv"
    before_metrics, before_log = json.loads(metrics.read_text()), [r.split("\t")[:-1] for r in log_tsv.read_text().splitlines()]
    state = demo / "checkpoints" / run / "state.pt"
    often = _with_config(demo, _set("finetune.checkpoint_every", 5))
    # the first periodic checkpoint is after update 5
    stop_at_first_checkpoint(demo, ["--configfile", str(often), "--forcerun", "finetune", "--", f"{run}/metrics.json"],
                              state, run, jitter=0.3, poll=0.02)
    assert state.exists() and not metrics.exists()

    result = snakemake(demo, "--cores", "1", f"{run}/metrics.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoints/" in (demo / "logs" / f"{run}.log").read_text()
    assert json.loads(metrics.read_text()) == before_metrics
    assert [r.split("\t")[:-1] for r in log_tsv.read_text().splitlines()] == before_log
    assert not state.parent.exists()  # removed once the metrics were written


def test_plan_counts_the_real_tokens_of_the_finished_run(demo):
    """`snakemake --cores 1 plan` after the run: exact counts from the tokenized data and the built model, and each job's
    examples as its run drew them (fine-tuning: updates x batch, as metrics.json records; pre-finetuning:
    max_steps x batch)."""
    config = load_config()
    result = snakemake(demo, "plan", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = pd.read_csv(demo / "results/plan_jobs.tsv", sep="\t")
    curve = jobs[jobs.part == "curve"]
    assert set(curve.basis) == {"exact"}
    assert curve.rule.value_counts().to_dict() == {"prefinetune": 12, "finetune": 24, "finetune_baseline": 2}
    null = jobs[jobs.part == "null_arm"]  # priced like the curve's own jobs of the same k
    assert null.rule.value_counts().to_dict() == {"prefinetune": 3, "finetune": 6}
    assert set(null.examples[null.rule == "prefinetune"]) == set(curve.examples[curve.output.str.contains("/k16/")
                                                                                 & (curve.rule == "prefinetune")])
    for row in curve[curve.rule != "prefinetune"].itertuples():
        run = json.loads((demo / row.output).read_text())
        assert row.examples == run["steps"] * config["finetune"]["batch_size"], row.output
    pre = curve[curve.rule == "prefinetune"]
    assert (pre.examples == config["prefinetune"]["max_steps"] * config["prefinetune"]["batch_size"]).all()
    assert (jobs.tokens > jobs.examples).all()
    summary = pd.read_csv(demo / "results/plan.tsv", sep="\t")
    assert summary[summary.part == "total"].iloc[0].jobs == len(jobs)
    # the disk bill: every folder exists now, so its bytes are the files' own
    disk = pd.read_csv(demo / "results/plan_disk.tsv", sep="\t").set_index("part")
    tokenized = sum(folder_bytes(p) for p in (demo / "results/tokenized").glob("*/*"))
    assert disk.loc["tokenized data", "bytes"] == tokenized and set(disk.basis) == {"exact"}
    assert disk.loc["pre-finetuned models", "count"] == 12 * (1 + len(config["ablations"])) + 3  # and the null arm's


def test_a_job_that_asks_for_a_gpu_and_sees_none_stops_before_it_trains(demo):
    """The demo's training jobs ask for a GPU and train on the CPU only because the demo sets allow_cpu: true. A new
    run (a third seed) without it stops at its start, before training: its log's one error line names the host,
    CUDA_VISIBLE_DEVICES and torch's CUDA version; no output, no live record, no traceback."""
    strict = _with_config(demo, lambda c: c.update(allow_cpu=False, finetune_seeds=3))
    run = "results/finetune/k0/syn_target_pair/seed3"
    result = snakemake(demo, "--cores", "1", f"{run}/metrics.json", "--configfile", str(strict))
    assert result.returncode != 0
    log = (demo / "logs" / f"{run}.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in log, log
    assert errors[0].startswith("Error: the job asks for 1 GPU but") and f"on {socket.gethostname()} (" in errors[0]
    assert "CUDA_VISIBLE_DEVICES" in errors[0] and f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none'}" in errors[0]
    assert errors[0] in result.stderr  # on Snakemake's console too
    assert not (demo / run).exists() and not (demo / "logs" / run / "train_log.tsv").exists()

