# Config validation, every path template, and the input, params and resource functions of the rules.
import functools
import math
import os
import re
import sys
from pathlib import Path

from prefinetune import tasks as registry
from prefinetune.config import (MAIN, MODEL_SOURCES, NULL, REFERENCE, Experiment, Run, checkpoint_root,
                               config_sources, duration_minutes, hf_home, is_reference, reference_name)
from prefinetune.plan import Pricer, Requests, training_jobs
from prefinetune.slurm_plugin import fix_job_arrays
from prefinetune.tasks import ConfigError

REPO = Path(workflow.basedir)
# envs/prefinetune.yaml installs this repository (pip, editable) into the environment of --sdm conda from here:
# conda runs pip in .snakemake/conda/, where a relative path would not reach the repository.
os.environ.update(PREFINETUNE_REPO=str(REPO))
# Where Snakemake submits the jobs: two fixes of the Slurm executor plugin's job arrays, and its checks at the start
# of a Slurm run (src/prefinetune/slurm_plugin.py).
if workflow.is_main_process:
    fix_job_arrays()

# Built from the config files themselves (not Snakemake's merge), so that every error names the file its value
# came from, and a --configfile's model section (hub, path or build) replaces the default's instead of adding to it.
try:
    SOURCES = config_sources(workflow.configfiles, workflow.config_settings.configfiles,
                             workflow.config_settings.config, workflow.config_settings.replace_workflow_config)
    EXP = Experiment.from_sources(SOURCES, REPO)
except ConfigError as error:
    sys.exit(f"Config error: {error}")

MODEL = EXP.config["model"]["name"]
RES = EXP.config["resources"]
# The Hugging Face cache (config hf_home): every job started from here, local or on Slurm, inherits it; downloads use it.
if hf_home(EXP.config):
    os.environ.update(HF_HOME=hf_home(EXP.config))


wildcard_constraints:
    root=r"results(/ablations/[a-z0-9_-]+|/null)?",
    task=r"[a-z0-9_]+",
    target=r"[a-z0-9_]+",
    k=r"[1-9][0-9]*",
    draw=r"[1-9][0-9]*",
    seed=r"[1-9][0-9]*",
    pct=r"[1-9][0-9]?|100",
    reference="|".join(re.escape(name) for name in EXP.reference_models) or r"(?!)",  # (?!): no reference model


# -- every output path, once: the rules' outputs and the input functions below both use these -------------------------
# {root} is a curve's folder: results/ for the main method, results/ablations/<name>/ for each ablation,
# results/null/ for the null arm (its labels destroyed).
DATASET = "resources/datasets/{task}"
MODEL_DIR = f"resources/models/{MODEL}"
TOKENIZED = f"results/tokenized/{MODEL}/{{task}}"
SUBSETS = "results/subsets/draw{draw}.yaml"
PREFINETUNED = "{root}/prefinetune/k{k}/draw{draw}"  # model/ and train_log.tsv
FINETUNED = "{root}/finetune/k{k}/draw{draw}/{target}/seed{seed}"  # metrics.json and train_log.tsv
BASELINE = "results/finetune/k0/{target}/seed{seed}"  # k = 0: the original model, shared by every curve
EFFICIENCY = "results/sample_efficiency"
FRACTION = f"{EFFICIENCY}/k{{k}}/draw{{draw}}/{{target}}/pct{{pct}}/seed{{seed}}"
FRACTION_BASELINE = f"{EFFICIENCY}/k0/{{target}}/pct{{pct}}/seed{{seed}}"
ABLATIONS = "results/ablations"
NULL_ROOT = "results/null"  # the null arm's curve, and its comparison with the main curve (rules/null.smk)
# A reference model (config reference_models): a published checkpoint, fine-tuned like k = 0, every path naming it.
REFERENCE_MODEL_DIR = "resources/models/{reference}"
REFERENCE_TOKENIZED = "results/tokenized/{reference}/{task}"  # with its own tokenizer
REFERENCE_RUN = "results/reference/{reference}/{target}/seed{seed}"  # metrics.json and train_log.tsv
CURVE_FILES = ["scaling.csv", "scaling_curve.pdf", "scaling_curve.png", "critical_point.csv", "transfer.csv",
               "transfer.pdf", "transfer.png", "prefinetune_loss.pdf", "prefinetune_loss.png"]


def log(path):
    return f"logs/{path}.log"


def benchmark(path):
    return f"benchmarks/{path}.tsv"


def variant_root(variant):
    return "results" if variant == MAIN else NULL_ROOT if variant == NULL else f"{ABLATIONS}/{variant}"


def root_variant(root):
    return MAIN if root == "results" else NULL if root == NULL_ROOT else Path(root).name


def variant_of(wildcards):
    return root_variant(wildcards.root)


def run_folder(run):
    """The folder of a fine-tuning run (prefinetune.config.Run): its metrics.json and train_log.tsv."""
    if is_reference(run.variant):
        return REFERENCE_RUN.format(reference=reference_name(run.variant), target=run.target, seed=run.seed)
    values = {"root": variant_root(run.variant), "k": run.k, "draw": run.draw, "target": run.target,
              "seed": run.seed, "pct": run.percent}
    if run.percent is None:
        return (BASELINE if run.k == 0 else FINETUNED).format(**values)
    return (FRACTION_BASELINE if run.k == 0 else FRACTION).format(**values)


def metrics_files(runs):
    return [f"{run_folder(run)}/metrics.json" for run in runs]


# -- params: plain data, exactly what changes a job's result -----------------------------------------------------------
def task(name):
    if name not in EXP.tasks:
        raise ValueError(f"unknown task '{name}' (not in the registry {EXP.config['registry']})")
    return EXP.tasks[name]


def download_params(wildcards):
    return registry.params(task(wildcards.task), registry.DATA_FIELDS)


def tokenize_params(wildcards):
    return registry.params(task(wildcards.task), registry.TOKENIZE_FIELDS)


def target_params(wildcards):
    return registry.params(task(wildcards.target))


def subset_params(wildcards):
    return [registry.params(task(t)) for t in EXP.subset(int(wildcards.k), int(wildcards.draw))]


def prefinetune_settings(wildcards):
    """The variant's settings with its draw's seed (the same at every k and in every variant)."""
    return registry.plain(EXP.prefinetune_settings(variant_of(wildcards), int(wildcards.draw)))


def finetune_settings(wildcards):
    return registry.plain(EXP.finetune_settings(wildcards.target))


def finetune_meta(wildcards):
    reference = wildcards.get("reference")
    if reference:  # a reference model's run: no k (its row in scaling.csv is not a point of the curve)
        return {"variant": f"{REFERENCE}{reference}", "k": None, "draw": 0, "tasks": [], "model": reference}
    k = int(wildcards.get("k", 0))
    draw = int(wildcards.get("draw", 0))
    return {"variant": root_variant(wildcards.get("root", "results")), "k": k, "draw": draw,
            "tasks": EXP.subset(k, draw) if k else [], "model": MODEL}


def reference_params(wildcards):
    """A reference model's entry of the config (hub and revision, or path)."""
    return registry.plain(EXP.reference_models[wildcards.reference])


def train_percent(wildcards):
    """Share of the target's training data: 100 except in the sample-efficiency runs."""
    return int(wildcards.get("pct", 100))


def fraction_order_seed(wildcards):
    """sample_efficiency.seed, which orders the examples a share keeps; None for the whole split, which it
    does not change (so changing it reruns no run of the main curve)."""
    return EXP.fraction_seed if train_percent(wildcards) < 100 else None


def curve_name(wildcards):
    variant = variant_of(wildcards)
    name = {MAIN: "pre-finetuning", NULL: "null arm (labels destroyed)"}.get(variant, f"ablation: {variant}")
    return f"{name}, {MODEL}"


def plot_title(wildcards):
    return f"{curve_name(wildcards)}: target performance vs number of pre-finetuning tasks"


def transfer_title(wildcards):
    return f"per-task transfer, {curve_name(wildcards)}: effect of a task in the subset, k fixed"


def loss_title(wildcards):
    return f"pre-finetuning loss, {curve_name(wildcards)}"


# -- inputs --------------------------------------------------------------------------------------------------------
def model_build_texts(wildcards):
    """A tiny model's tokenizer is trained on the curve's own data (not the held-out sample-efficiency targets');
    hub models need nothing."""
    if "build" in EXP.config["model"]:
        return expand(DATASET, task=EXP.curve_tasks)
    return []


def prefinetune_inputs(wildcards):
    subset = EXP.subset(int(wildcards.k), int(wildcards.draw))
    return {"base": rules.download_model.output[0], "data": expand(rules.tokenize.output[0], task=subset)}


def finetune_encoder(wildcards):
    """k = 0 fine-tunes the original model; k > 0 the pre-finetuned one of that root, k and draw."""
    k = int(wildcards.get("k", 0))
    if k == 0:
        return rules.download_model.output[0]
    return rules.prefinetune.output.model.format(root=wildcards.get("root", "results"), k=k, draw=wildcards.draw)


def target_tokenized(wildcards):
    return rules.tokenize.output[0].format(task=wildcards.target)


def reference_encoder(wildcards):
    return rules.download_reference.output[0].format(reference=wildcards.reference)


def reference_tokenized(wildcards):
    """A reference model's runs read the target tokenized with its own tokenizer."""
    return rules.tokenize_reference.output[0].format(reference=wildcards.reference, task=wildcards.target)


def aggregate_runs(wildcards):
    """Every run of one curve, then every reference model's runs (rows reference:<name> of its table; not in the
    null arm's, which is compared with the main curve only)."""
    variant = variant_of(wildcards)
    return metrics_files(EXP.curve_runs(variant) + (EXP.reference_runs() if variant != NULL else []))


def efficiency_runs():
    return metrics_files(EXP.efficiency_runs())


def train_logs(wildcards):
    """The pre-finetuning log of every model of one root."""
    return [rules.prefinetune.output.log_tsv.format(root=wildcards.root, k=k, draw=draw)
            for k, draw in EXP.models(variant_of(wildcards))]


def training_output(wildcards):
    """The output of the training job with these wildcards (how Requests knows the job)."""
    values = dict(wildcards.items())
    if "target" not in values:
        return rules.prefinetune.output.model.format(**values)
    variant = f"{REFERENCE}{values['reference']}" if values.get("reference") else root_variant(values.get("root", "results"))
    run = Run(variant, int(values.get("k", 0)), int(values.get("draw", 0)), values["target"], int(values["seed"]),
              int(values["pct"]) if "pct" in values else None)
    return f"{run_folder(run)}/metrics.json"


@functools.cache
def runtime_requests():
    """The runtime of every training job, from the plan's estimate (prefinetune.plan.Requests), built once."""
    return Requests(plan_jobs(), Pricer(plan_tasks(), plan_tokenized_paths(), plan_models(), EXP.config["plan"],
                                        EXP.config["max_length"], EXP.config["doc_stride"]))


def train_runtime(wildcards, attempt):
    """sbatch -t of a training job, in minutes: the plan's estimate x plan.runtime_safety + the 5-minute warning,
    at least plan.runtime_floor, at most the config's runtime; one value per fine-tuning rule (job arrays); a
    retry asks for twice as long (prefinetune.plan.Requests). Estimated in the Snakemake that submits the jobs
    (again when a job is ready: from the real token counts once its data is tokenized); inside a job, where Slurm
    has allocated its time already, the config's runtime."""
    if not workflow.is_main_process:
        return plan_runtime_limit(wildcards)
    return runtime_requests().minutes(training_output(wildcards), attempt)


def plan_runtime_limit(wildcards):
    """The config's runtime of the job's rule, in minutes: the most it may ask for."""
    stage = "finetune" if "target" in dict(wildcards.items()) else "prefinetune"
    return math.ceil(duration_minutes(RES[stage]["runtime"]))


def prefinetune_resources():
    """The Slurm executor's resource keys for the GPUs and nodes of a pre-finetuning job.

    One node: gpu=<gpus> (sbatch --gpus). Several nodes: sbatch --nodes=N --ntasks=N --gres=gpu:<gpus> (GPUs
    per node), and `mpi` makes the job step run the job in the batch step on the first node instead of
    wrapping it in `srun -n1`; the job then starts its own srun over all nodes (prefinetune.launch).
    tasks_per_gpu=0 keeps the executor from turning `tasks` into --ntasks-per-gpu.
    """
    r = RES["prefinetune"]
    if r["nodes"] == 1:
        return {"gpu": r["gpus"]}
    gres = {"gres": f"gpu:{r['gpus']}"} if r["gpus"] else {}
    return {"nodes": r["nodes"], "tasks": r["nodes"], "tasks_per_gpu": 0, "mpi": "srun", **gres}


# -- targets -------------------------------------------------------------------------------------------------------
def curve_outputs(variants):
    return expand("{root}/{name}", root=[variant_root(v) for v in variants], name=CURVE_FILES)


def all_outputs():
    """The paper's curve and the subsets it was drawn from; the null arm too where null_arm.default_target says so."""
    return [*expand(SUBSETS, draw=EXP.draws), *curve_outputs([MAIN]), *(null_outputs() if EXP.null_in_default else [])]


def null_outputs():
    """The null arm's table and its comparison with the main curve (rules/null.smk); nothing without a null arm."""
    if not EXP.null_counts:
        return []
    return [f"{NULL_ROOT}/{name}" for name in ("scaling.csv", "content_transfer.csv", "critical_point_by_curve.csv",
                                               "null_arm.pdf", "null_arm.png")]


def ablation_outputs():
    ablations = EXP.variants[1:]
    comparison = expand(f"{ABLATIONS}/comparison.{{ext}}", ext=["csv", "pdf", "png"]) if ablations else []
    return [*curve_outputs(ablations), *comparison]


def efficiency_outputs():
    return expand(f"{EFFICIENCY}/sample_efficiency.{{ext}}", ext=["csv", "pdf", "png"])


# -- the cost plan (rules/plan.smk) -------------------------------------------------------------------------------
@functools.cache
def plan_jobs():
    """Every training job of the DAG, once each, as prefinetune.plan lists it, with the output its rule gives it
    (computed once)."""
    jobs = []
    for job in training_jobs(EXP):
        output = getattr(rules, job["rule"]).output
        template = output.model if job["rule"] == "prefinetune" else output.metrics
        path = template.format(root=variant_root(job["variant"]), pct=job["percent"], reference=job.get("model"), **job)
        jobs.append(registry.plain({**job, "output": path}))
    return jobs


def plan_tokenized_paths():
    """{model: {task: its tokenized folder}}: the main model's tasks, and each reference model's targets."""
    paths = {MODEL: {t: TOKENIZED.format(task=t) for t in EXP.used_tasks}}
    for name in EXP.reference_models:
        paths[name] = {t: REFERENCE_TOKENIZED.format(reference=name, task=t) for t in EXP.targets}
    return paths


def plan_models():
    """{model: its folder}, the main model first."""
    return {MODEL: MODEL_DIR, **{name: REFERENCE_MODEL_DIR.format(reference=name) for name in EXP.reference_models}}


def plan_datasets():
    """{task: its downloaded folder} of every task the experiment uses."""
    return {t: DATASET.format(task=t) for t in EXP.used_tasks}


def plan_model_sources():
    """{model: hub, path or build}: where each model comes from (the disk bill counts the hub's cache)."""
    models = {MODEL: EXP.config["model"], **EXP.reference_models}
    return {name: next(key for key in MODEL_SOURCES if key in model) for name, model in models.items()}


def plan_places():
    """Where the checkpoints and the Hugging Face cache go, as the disk bill names them."""
    return {"checkpoints": checkpoint_root(EXP.config),
            "hf_cache": os.environ.get("HF_HOME", "~/.cache/huggingface") + " (HF_HOME)"}


def plan_tokenized(wildcards):
    """The downloads, tokenized data and models that exist already: the plan counts their real tokens, parameters
    and bytes. Read when the DAG is built, so that the plan reruns once data is downloaded or tokenized (and is
    exact from then on)."""
    paths = [p for tasks in plan_tokenized_paths().values() for p in tasks.values()] + list(plan_models().values())
    return [p for p in [*paths, *plan_datasets().values()] if Path(p).exists()]


def plan_tasks():
    return {name: registry.plain({"type": t.type, "num_labels": t.num_labels, "size": t.size, "source": t.source})
            for name, t in EXP.tasks.items() if name in EXP.used_tasks}
