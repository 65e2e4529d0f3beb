"""The DAG through Snakemake's own dry run: job counts per rule, path targets, and config errors."""

from __future__ import annotations

import copy
import math
import re

import pytest

from prefinetune import plan
from prefinetune.config import MAIN, NULL, Experiment
from workflow_helpers import REPO, expected_counts, job_counts, load_config, make_workdir, snakemake


def test_cluster_config_dry_run_lists_expected_jobs(tmp_path):
    config = load_config(REPO / "config.yaml")
    result = snakemake(make_workdir(tmp_path, config), "-n")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == expected_counts(config)


def test_demo_dry_run_lists_expected_jobs(tmp_path):
    result = snakemake(make_workdir(tmp_path), "-n")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts == expected_counts(load_config())
    # the embedded default's promised size: 5 task counts incl. 0, 3 draws, 2 targets, 1 seed
    assert counts["finetune_baseline"] == 2 and counts["prefinetune"] == 12 and counts["finetune"] == 24


def test_the_null_arm_repeats_the_main_models_of_its_task_counts(tmp_path):
    """`snakemake null` on the embedded default: the 3 models of k = 16 again under results/null/, fine-tuned on both
    targets (k = 0 shared, not repeated), the null arm's table and its comparison with the main curve's; the
    pre-finetuning jobs' params are the main ones with labels: shuffled and the draw's seed."""
    result = snakemake(make_workdir(tmp_path), "-n", "null", "--printshellcmds")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    exp = Experiment.from_config(load_config(), REPO)
    assert exp.null_counts == [0, 16] and not exp.null_in_default
    assert counts["prefinetune"] == 12 + 3 and counts["finetune"] == 24 + 3 * 2 and counts["finetune_baseline"] == 2
    assert counts["aggregate"] == 2 and counts["analyse_null"] == counts["plot_null"] == counts["null"] == 1
    assert "plot" not in counts and "analyse" not in counts  # the main curve's table suffices
    for path in ("results/null/prefinetune/k16/draw3/model", "results/null/finetune/k16/draw1/syn_target_span/seed1",
                 "results/null/content_transfer.csv", "results/null/critical_point_by_curve.csv"):
        assert path in result.stdout, path
    assert "results/null/finetune/k0/" not in result.stdout and "results/null/prefinetune/k10/" not in result.stdout
    settings = exp.prefinetune_settings(NULL, 3)
    assert settings == {**exp.prefinetune_settings(MAIN, 3), "labels": "shuffled"}


def test_single_metrics_file_is_a_valid_target(tmp_path):
    result = snakemake(make_workdir(tmp_path), "-n", "results/finetune/k10/draw2/syn_target_span/seed1/metrics.json")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # only what that run needs: its pre-finetuned model (10 tasks) and the data of those 10 tasks
    assert counts["prefinetune"] == 1 and counts["finetune"] == 1
    assert counts["tokenize"] == 10
    assert "finetune_baseline" not in counts and "aggregate" not in counts


def test_ablation_curves_have_their_own_folders(tmp_path):
    result = snakemake(make_workdir(tmp_path), "-n", "ablations")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    config = load_config()
    n_ablations = len(config["ablations"])
    assert counts["plot"] == n_ablations and counts["plot_transfer"] == n_ablations
    # the comparison with the main curve needs the main curve's table and critical points as well
    assert counts["aggregate"] == counts["analyse"] == n_ablations + 1 and counts["compare_ablations"] == 1
    assert counts["prefinetune"] == 12 * (n_ablations + 1) and "analyse_null" not in counts
    assert "results/ablations/comparison.png" in result.stdout
    assert "results/ablations/no_loss_scaling/prefinetune/k16/draw2/model" in result.stdout
    assert "results/ablations/homogeneous_batches/scaling_curve.pdf" in result.stdout
    # the k = 0 baseline and the data are shared with the main curve, not duplicated per ablation
    assert counts["finetune_baseline"] == 2 and counts["download_dataset"] == len(set(config["pool"]) | set(config["targets"]))


def test_sample_efficiency_fine_tunes_every_model_on_nested_fractions(tmp_path):
    result = snakemake(make_workdir(tmp_path), "-n", "sample_efficiency")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    config = load_config()
    exp = Experiment.from_config(config, REPO)
    runs = len(exp.efficiency_targets) * len(exp.percents) * len(exp.seeds)
    models = len([k for k in exp.counts if k > 0]) * len(exp.draws)
    assert counts["finetune_fraction"] == models * runs and counts["finetune_fraction_baseline"] == runs
    assert counts["prefinetune"] == models  # the main curve's models, shared
    assert counts["aggregate_efficiency"] == 1 and counts["plot_efficiency"] == 1
    assert "finetune" not in counts and "aggregate" not in counts  # the scaling curve is not needed
    assert "results/sample_efficiency/k10/draw1/syn_target_mc/pct25/seed1/metrics.json" in result.stdout
    assert "results/sample_efficiency/k0/syn_target_mc/pct100/seed1/metrics.json" in result.stdout


def _broken(change) -> dict:
    config = copy.deepcopy(load_config())
    change(config)
    return config


BAD_CONFIGS = {
    "misspelled task": (lambda c: c["pool"].__setitem__(3, "syn_4"), "pool[3]", "syn_4"),
    "count larger than pool": (lambda c: c["task_counts"].append(40), "task_counts[5]", "40"),
    "target not in registry": (lambda c: c["targets"].__setitem__(1, "rte"), "targets[1]", "rte"),
    "negative seed count": (lambda c: c.__setitem__("finetune_seeds", -1), "finetune_seeds", "-1"),
    "runtime without unit": (lambda c: c["resources"]["prefinetune"].__setitem__("runtime", "10"),
                             "resources.prefinetune.runtime", "10"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_stops_with_one_line_naming_the_field(tmp_path, case):
    change, field, value = BAD_CONFIGS[case]
    result = snakemake(make_workdir(tmp_path, _broken(change)), "-n")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Config error:")]
    assert len(errors) == 1, result.stderr
    assert field in errors[0] and value in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()  # stopped before any job ran


def test_slurm_profile_requests_a_gpu_per_training_job(tmp_path):
    config = load_config(REPO / "config.yaml")
    workdir = make_workdir(tmp_path, config)
    result = snakemake(workdir, "--profile", "slurm", "-n", "--cores", "64", "results/scaling_curve.pdf")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    prefinetune = out[out.index("\nrule prefinetune:"):]
    resources = prefinetune[prefinetune.index("resources:"):].splitlines()[0]
    res = config["resources"]["prefinetune"]
    assert f"gpu={res['gpus']}" in resources and f"cpus_per_task={res['threads']}" in resources
    # each job asks for the plan's estimate of it (x 2, + 5 min, at least 15 min, at most the config's 24h), not 24h
    asked = dry_run_runtimes(out)
    expected = expected_runtimes(config)
    pre = {o: m for o, (rule, m) in asked.items() if rule == "prefinetune"}
    assert len(pre) == expected_counts(config)["prefinetune"] and pre == {o: expected[o] for o in pre}
    assert max(pre.values()) < 1440 and len(set(pre.values())) > 1  # right-sized, and not one size for all
    assert "slurm_partition=" in resources
    assert "slurm_extra=--signal=TERM@300" in resources
    # fine-tuning checkpoints too, so it gets the same advance warning (also the sample-efficiency runs)
    for rule in ("finetune", "finetune_baseline"):
        job = out[out.index(f"\nrule {rule}:"):]
        assert "slurm_extra=--signal=TERM@300" in job[job.index("resources:"):].splitlines()[0], rule
    efficiency = snakemake(workdir, "--profile", "slurm", "-n", "--cores", "64", "sample_efficiency").stdout
    job = efficiency[efficiency.index("\nrule finetune_fraction:"):]
    assert "slurm_extra=--signal=TERM@300" in job[job.index("resources:"):].splitlines()[0]
    assert "slurm_partition=<EDIT: GPU partition>" in job[job.index("resources:"):].splitlines()[0]


def dry_run_runtimes(out: str) -> dict[str, tuple[str, int]]:
    """{first output: (rule, runtime in minutes)} of every job of a dry run's output that shows a runtime."""
    found = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule, output, runtime = (re.search(pattern, block) for pattern in
                                 (r"^(?:local)?rule (\w+):", r"\n    output: ([^,\n]+)", r"runtime=(\d+)"))
        if rule and output and runtime:
            found[output[1]] = (rule[1], int(runtime[1]))
    return found


def expected_runtimes(config: dict) -> dict[str, int]:
    """What each training job should ask for, computed here from the plan's estimate of its work (rough sizes from
    the registry, the assumed throughput): min(runtime, max(floor, ceil(hours x 60 x safety + 5))); the fine-tuning
    rules (job arrays) ask for their rule's longest. Keyed by the job's first output."""
    exp = Experiment.from_config(config, REPO)
    throughput = exp.config["plan"]
    rate = plan.tokens_per_second(throughput, throughput["model_params"])[0]
    registry = {n: {"type": t.type, "num_labels": t.num_labels, "size": t.size, "source": t.source}
                for n, t in exp.tasks.items()}
    sizes = {n: plan.rough_size(n, registry[n], exp.config["max_length"], exp.config["doc_stride"])
             for n in exp.used_tasks}
    floor, safety = int(throughput["runtime_floor"][:-1]), throughput["runtime_safety"]
    assert throughput["runtime_floor"].endswith("m")
    minutes, rules = {}, {}
    for job in plan.training_jobs(exp):
        limit = 1440 * int(job["runtime"][:-1]) if job["runtime"].endswith("d") else 60 * int(job["runtime"][:-1])
        assert job["runtime"][-1] in "hd"
        hours = plan.job_work(job, sizes)[1] / rate / 3600 / job["gpus"]
        if job["rule"] == "prefinetune":
            output = f"{'results' if job['variant'] == MAIN else 'results/ablations/' + job['variant']}/prefinetune/" \
                     f"k{job['k']}/draw{job['draw']}/model"
        elif job["rule"] == "finetune_baseline":
            output = f"results/finetune/k0/{job['target']}/seed{job['seed']}/metrics.json"
        elif job["rule"] == "finetune" and job["variant"] == MAIN:
            output = f"results/finetune/k{job['k']}/draw{job['draw']}/{job['target']}/seed{job['seed']}/metrics.json"
        elif job["rule"] == "finetune_reference":
            output = f"results/reference/{job['model']}/{job['target']}/seed{job['seed']}/metrics.json"
        else:
            output = f"{job['rule']}:{len(minutes)}"
        minutes[output] = min(limit, max(floor, math.ceil(hours * 60 * safety + 5)))
        rules[output] = job["rule"]
    for rule in set(rules.values()) - {"prefinetune"}:  # the rules submitted as job arrays
        longest = max(m for o, m in minutes.items() if rules[o] == rule)
        minutes.update({o: longest for o in minutes if rules[o] == rule})
    return minutes


def test_every_training_job_of_the_cluster_config_asks_for_its_estimate(tmp_path):
    """The right-sized runtime of every training job of the curve and its reference model, as the Slurm profile
    submits them, against the same computation done here; and `snakemake --cores 1 plan` bills the same values."""
    config = load_config(REPO / "config.yaml")
    workdir = make_workdir(tmp_path, config)
    result = snakemake(workdir, "--profile", "slurm", "-n", "--cores", "64")
    assert result.returncode == 0, result.stderr
    asked, expected = dry_run_runtimes(result.stdout), expected_runtimes(config)
    training = {o: m for o, (rule, m) in asked.items() if rule.startswith(("prefinetune", "finetune"))}
    counts = expected_counts(config)
    assert len(training) == sum(n for rule, n in counts.items() if rule.startswith(("prefinetune", "finetune")))
    assert training == {o: expected[o] for o in training}
    by_rule = {}
    for output, (rule, minutes) in asked.items():
        by_rule.setdefault(rule, set()).add(minutes)
    assert len(by_rule["finetune"]) == len(by_rule["finetune_baseline"]) == len(by_rule["finetune_reference"]) == 1
    assert by_rule["finetune"] == by_rule["finetune_baseline"] and max(by_rule["finetune"]) < 240  # RACE's, not 4h
    # the bill's asks column: the same minutes
    result = snakemake(workdir, "plan", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    import pandas as pd
    billed = pd.read_csv(workdir / "results/plan_jobs.tsv", sep="\t").set_index("output")["asks_minutes"]
    assert {o: billed[o] for o in training} == training


def test_multi_node_prefinetune_asks_for_nodes_and_gpus_per_node(tmp_path):
    """nodes > 1: the executor's keys for one task per node, GPUs per node (gres), and its `mpi` path (the job
    runs in the batch step and starts its own srun); fine-tuning keeps one GPU."""
    config = load_config(REPO / "config.yaml")
    config["resources"]["prefinetune"].update(nodes=2, gpus=4)
    result = snakemake(make_workdir(tmp_path, config), "--profile", "slurm", "-n", "--cores", "64",
                       "results/scaling_curve.pdf")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    prefinetune = out[out.index("\nrule prefinetune:"):]
    resources = dict(item.split("=", 1) for item in
                     prefinetune[prefinetune.index("resources:"):].splitlines()[0][len("resources: "):].split(", "))
    assert {k: resources[k] for k in ("nodes", "tasks", "tasks_per_gpu", "mpi", "gres")} == \
        {"nodes": "2", "tasks": "2", "tasks_per_gpu": "0", "mpi": "srun", "gres": "gpu:4"}
    assert "gpu" not in resources  # --gpus would count GPUs per job, not per node
    finetune = out[out.index("\nrule finetune:"):]
    assert "gpu=1" in finetune[finetune.index("resources:"):].splitlines()[0]


def test_cluster_sample_efficiency_fine_tunes_held_out_datasets_and_reuses_a_main_target_at_100_percent(tmp_path):
    """config.yaml's study: datasets held out of the pool, fine-tuned on every share from every model. A target of
    the main curve held out of pre-finetuning (protocol held_out) reuses the curve's own run at 100 %."""
    config = load_config(REPO / "config.yaml")
    result = snakemake(make_workdir(tmp_path / "held_out", config), "-n", "sample_efficiency")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    exp = Experiment.from_config(config, REPO)
    models = len([k for k in exp.counts if k > 0]) * len(exp.draws)
    runs = len(exp.efficiency_targets) * len(exp.seeds)
    assert not set(exp.efficiency_targets) & (set(exp.config["pool"]) | set(exp.targets))
    assert counts["finetune_fraction"] == models * runs * len(exp.percents)
    assert counts["finetune_fraction_baseline"] == runs * len(exp.percents)
    assert "finetune" not in counts and "pct100" in result.stdout  # the main curve is not needed

    config.update(protocol="held_out", task_counts=[0, 10, 22, 32], sample_efficiency={"targets": ["rte"]})
    result = snakemake(make_workdir(tmp_path / "main_target", config), "-n", "sample_efficiency")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    models, runs, below_100 = 3 * len(exp.draws), len(exp.seeds), len([p for p in exp.percents if p < 100])
    assert counts["finetune_fraction"] == models * runs * below_100
    assert counts["finetune"] == models * runs  # the 100 % point is the main curve's own fine-tuning run
    assert "pct100" not in result.stdout


def test_plan_of_the_cluster_config_works_offline_before_any_download(tmp_path):
    """`snakemake --cores 1 plan` on config.yaml with nothing downloaded: every training job of the curve, the null
    arm, the ablations and the sample-efficiency study priced once from the registry's rough sizes. In bf16 (the
    default) every job fits; in fp32, RACE and MNLI exceed the 4 h fine-tuning runtime at the assumed throughput and
    are named with the runtime they need."""
    import pandas as pd

    config = load_config(REPO / "config.yaml")
    workdir = make_workdir(tmp_path / "bf16", config)
    result = snakemake(workdir, "plan", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "assumed: a100 bf16" in result.stdout and "Every job fits its runtime." in result.stdout
    bf16_hours = pd.read_csv(workdir / "results/plan_jobs.tsv", sep="\t").gpu_hours.sum()
    config["plan"]["precision"] = "fp32"
    workdir = make_workdir(tmp_path / "fp32", config)
    result = snakemake(workdir, "plan", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (workdir / "resources").exists() and not (workdir / "results" / "tokenized").exists()
    assert "Cost plan. Throughput:" in result.stdout and "assumed: a100 fp32" in result.stdout
    jobs = pd.read_csv(workdir / "results/plan_jobs.tsv", sep="\t")
    assert jobs.gpu_hours.sum() == pytest.approx(bf16_hours * 312 / 19.5, rel=1e-3)  # the A100's two peaks (rows rounded)
    assert set(jobs.basis) == {"rough"} and jobs.output.is_unique
    # the same jobs as the DAG: every training job the four targets schedule
    counts = job_counts(snakemake(workdir, "-n", "all", "ablations", "sample_efficiency", "null").stdout)
    assert jobs.rule.value_counts().to_dict() == {r: n for r, n in counts.items() if r.startswith(("prefinetune", "finetune"))}
    summary = pd.read_csv(workdir / "results/plan.tsv", sep="\t")
    total = summary[summary.part == "total"].iloc[0]
    assert total.jobs == len(jobs) and total.gpu_hours == pytest.approx(jobs.gpu_hours.sum(), rel=1e-3)
    over = jobs[~jobs.fits]
    assert {"race", "mnli"} <= set(over[over.rule == "finetune"].job)
    assert "finetune race:" in result.stdout and "needs" in result.stdout
    # the disk bill, from the registry: a checkpoint of 12 bytes per parameter, twice while written, per running job
    disk = pd.read_csv(workdir / "results/plan_disk.tsv", sep="\t").set_index("part")
    assert set(disk.basis) == {"rough"} and disk.loc["checkpoints at peak", "count"] == config["plan"]["jobs_at_once"]
    assert disk.loc["checkpoints at peak", "bytes"] == config["plan"]["jobs_at_once"] * 2 * 12 * config["plan"]["model_params"]
    assert disk.loc["total", "bytes"] == disk.bytes.drop("total").sum() and "Disk (results/plan_disk.tsv" in result.stdout
    # RoBERTa's own recipe for RACE (finetune_overrides: 4 epochs): 4 passes of 4 choices, not 10
    race = jobs[(jobs.rule == "finetune_baseline") & (jobs.job == "race")].iloc[0]
    assert race.examples == math.ceil(4 * 87866 / 16) * 16


@pytest.mark.parametrize("config_file", ["bart/config.yaml", "demo/bart/config.yaml"])
def test_bart_configs_dry_run_lists_expected_jobs_and_lint_clean(tmp_path, config_file):
    """The BART experiment and its demo: the same DAG as RoBERTa's (four families, summarization targets), and
    the sample-efficiency study on a summarization target."""
    config = load_config(REPO / config_file)
    workdir = make_workdir(tmp_path, config)
    result = snakemake(workdir, "-n")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == expected_counts(config)
    exp = Experiment.from_config(config, REPO)
    assert {exp.tasks[t].type for t in exp.config["pool"]} >= {"classification", "multiple_choice", "span", "summarization"}
    summaries = [t for t in exp.efficiency_targets if exp.tasks[t].type == "summarization"]
    curve_summaries = [t for t in exp.targets if exp.tasks[t].type == "summarization"]
    assert summaries and curve_summaries and not set(summaries) & set(exp.config["pool"])  # held out, as in the paper
    result = snakemake(workdir, "-n", "sample_efficiency", "ablations")
    assert result.returncode == 0, result.stderr
    assert f"sample_efficiency/k0/{summaries[0]}/pct{exp.percents[0]}/seed1/metrics.json" in result.stdout
    ablation = next(iter(exp.config["ablations"]))
    assert (f"results/ablations/{ablation}/finetune/k{exp.counts[-1]}/draw1/{curve_summaries[0]}/seed1/metrics.json"
            in result.stdout)
    lint = snakemake(workdir, "--lint")
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout[-2000:]

