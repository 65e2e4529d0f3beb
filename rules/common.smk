# Config validation, every path template, and the input and params functions of the rules.
import sys
from pathlib import Path

from prefinetune import tasks as registry
from prefinetune.config import MAIN, Experiment, config_sources
from prefinetune.plan import training_jobs
from prefinetune.tasks import ConfigError

REPO = Path(workflow.basedir)

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


wildcard_constraints:
    root=r"results(/ablations/[a-z0-9_-]+)?",
    task=r"[a-z0-9_]+",
    target=r"[a-z0-9_]+",
    k=r"[1-9][0-9]*",
    draw=r"[1-9][0-9]*",
    seed=r"[1-9][0-9]*",
    pct=r"[1-9][0-9]?|100",


# -- every output path, once: the rules' outputs and the input functions below both use these -------------------------
# {root} is a curve's folder: results/ for the main method, results/ablations/<name>/ for each ablation.
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
CURVE_FILES = ["scaling.csv", "scaling_curve.pdf", "scaling_curve.png", "critical_point.csv", "transfer.csv",
               "transfer.pdf", "transfer.png", "prefinetune_loss.pdf", "prefinetune_loss.png"]


def log(path):
    return f"logs/{path}.log"


def benchmark(path):
    return f"benchmarks/{path}.tsv"


def variant_root(variant):
    return "results" if variant == MAIN else f"{ABLATIONS}/{variant}"


def root_variant(root):
    return MAIN if root == "results" else Path(root).name


def variant_of(wildcards):
    return root_variant(wildcards.root)


def run_folder(run):
    """The folder of a fine-tuning run (prefinetune.config.Run): its metrics.json and train_log.tsv."""
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
    return registry.plain(EXP.prefinetune_settings(variant_of(wildcards)))


def finetune_settings(wildcards):
    return registry.plain(EXP.finetune_settings(wildcards.target))


def finetune_meta(wildcards):
    k = int(wildcards.get("k", 0))
    draw = int(wildcards.get("draw", 0))
    return {"variant": root_variant(wildcards.get("root", "results")), "k": k, "draw": draw,
            "tasks": EXP.subset(k, draw) if k else [], "model": MODEL}


def train_percent(wildcards):
    """Share of the target's training data: 100 except in the sample-efficiency runs."""
    return int(wildcards.get("pct", 100))


def fraction_order_seed(wildcards):
    """sample_efficiency.seed, which orders the examples a share keeps; None for the whole split, which it
    does not change (so changing it reruns no run of the main curve)."""
    return EXP.fraction_seed if train_percent(wildcards) < 100 else None


def curve_name(wildcards):
    variant = variant_of(wildcards)
    return f"{'pre-finetuning' if variant == MAIN else f'ablation: {variant}'}, {MODEL}"


def plot_title(wildcards):
    return f"{curve_name(wildcards)}: target performance vs number of pre-finetuning tasks"


def transfer_title(wildcards):
    return f"per-task transfer, {curve_name(wildcards)}: effect of a task in the subset, k fixed"


def loss_title(wildcards):
    return f"pre-finetuning loss, {curve_name(wildcards)}"


# -- inputs --------------------------------------------------------------------------------------------------------
def model_build_texts(wildcards):
    """A tiny model's tokenizer is trained on the experiment's own data; hub models need nothing."""
    if "build" in EXP.config["model"]:
        return expand(DATASET, task=EXP.used_tasks)
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


def aggregate_runs(wildcards):
    return metrics_files(EXP.curve_runs(variant_of(wildcards)))


def efficiency_runs():
    return metrics_files(EXP.efficiency_runs())


def train_logs(wildcards):
    """The pre-finetuning log of every model of one root."""
    return [rules.prefinetune.output.log_tsv.format(root=wildcards.root, k=k, draw=draw) for k, draw in EXP.models()]


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
    """The paper's curve and the subsets it was drawn from."""
    return [*expand(SUBSETS, draw=EXP.draws), *curve_outputs([MAIN])]


def ablation_outputs():
    ablations = EXP.variants[1:]
    comparison = expand(f"{ABLATIONS}/comparison.{{ext}}", ext=["csv", "pdf", "png"]) if ablations else []
    return [*curve_outputs(ablations), *comparison]


def efficiency_outputs():
    return expand(f"{EFFICIENCY}/sample_efficiency.{{ext}}", ext=["csv", "pdf", "png"])


# -- the cost plan (rules/plan.smk) -------------------------------------------------------------------------------
def plan_jobs():
    """Every training job of the DAG, once each, as prefinetune.plan lists it, with the output its rule gives it."""
    jobs = []
    for job in training_jobs(EXP):
        output = getattr(rules, job["rule"]).output
        template = output.model if job["rule"] == "prefinetune" else output.metrics
        path = template.format(root=variant_root(job["variant"]), pct=job["percent"], **job)
        jobs.append(registry.plain({**job, "output": path}))
    return jobs


def plan_tokenized(wildcards):
    """The tokenized data and model that exist already: the plan counts their real tokens and parameters.
    Read when the DAG is built, so that the plan reruns once data is tokenized (and is exact from then on)."""
    paths = expand(TOKENIZED, task=EXP.used_tasks) + [MODEL_DIR]
    return [p for p in paths if Path(p).exists()]


def plan_tasks():
    return {name: registry.plain({"type": t.type, "num_labels": t.num_labels, "size": t.size, "source": t.source})
            for name, t in EXP.tasks.items() if name in EXP.used_tasks}
