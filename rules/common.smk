# Config validation, paths and input functions shared by every rule.
import sys
from pathlib import Path

from prefinetune.config import MAIN, Experiment, config_sources
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
ABLATION_ROOT = "results/ablations"
EFFICIENCY = "results/sample_efficiency"


wildcard_constraints:
    root=r"results(/ablations/[a-z0-9_-]+)?",
    task=r"[a-z0-9_]+",
    target=r"[a-z0-9_]+",
    k=r"[1-9][0-9]*",
    draw=r"[1-9][0-9]*",
    seed=r"[1-9][0-9]*",
    pct=r"[1-9][0-9]?|100",


def variant_root(variant):
    return "results" if variant == MAIN else f"{ABLATION_ROOT}/{variant}"


def root_variant(root):
    return MAIN if root == "results" else Path(root).name


def task(name):
    if name not in EXP.tasks:
        raise ValueError(f"unknown task '{name}' (not in the registry {EXP.config['registry']})")
    return EXP.tasks[name]


def tokenized(name):
    return f"results/tokenized/{MODEL}/{name}"


def model_dir():
    return f"resources/models/{MODEL}"


# -- input and params functions ---------------------------------------------------------------------------------------
def task_entry(wildcards):
    return task(wildcards.task)


def target_entry(wildcards):
    return task(wildcards.target)


def model_build_texts(wildcards):
    """A tiny model's tokenizer is trained on the experiment's own data; hub models need nothing."""
    if "build" in EXP.config["model"]:
        return expand("resources/datasets/{task}", task=EXP.used_tasks)
    return []


def draw_order(wildcards):
    return EXP.order(int(wildcards.draw))


def subset_tasks(wildcards):
    return [task(t) for t in EXP.subset(int(wildcards.k), int(wildcards.draw))]


def prefinetune_inputs(wildcards):
    return {"base": model_dir(), "data": [tokenized(t.name) for t in subset_tasks(wildcards)]}


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


def prefinetune_settings(wildcards):
    return EXP.prefinetune_settings(root_variant(wildcards.root))


def target_tokenized(wildcards):
    return tokenized(wildcards.target)


def finetune_encoder(wildcards):
    """k = 0 fine-tunes the original model; k > 0 the pre-finetuned one of that root, k and draw."""
    k = int(wildcards.get("k", 0))
    if k == 0:
        return model_dir()
    return f"{wildcards.get('root', 'results')}/prefinetune/k{k}/draw{wildcards.draw}/model"


def finetune_meta(wildcards):
    k = int(wildcards.get("k", 0))
    draw = int(wildcards.get("draw", 0))
    return {"variant": root_variant(wildcards.get("root", "results")), "k": k, "draw": draw,
            "tasks": EXP.subset(k, draw) if k else [], "model": MODEL}


def finetune_runs(root, targets=None):
    """Every metrics.json behind one curve: the shared k = 0 baseline and this root's pre-finetuned models."""
    targets = EXP.targets if targets is None else targets
    runs = []
    for k in EXP.counts:
        if k == 0:
            runs += expand("results/finetune/k0/{target}/seed{seed}/metrics.json", target=targets, seed=EXP.seeds)
        else:
            runs += expand(f"{root}/finetune/k{k}/draw{{draw}}/{{target}}/seed{{seed}}/metrics.json",
                           draw=EXP.draws, target=targets, seed=EXP.seeds)
    return runs


def finetune_settings(wildcards):
    return EXP.finetune_settings(wildcards.target)


def train_percent(wildcards):
    """Share of the target's training data: 100 except in the sample-efficiency runs."""
    return int(wildcards.get("pct", 100))


def fraction_order_seed(wildcards):
    """sample_efficiency.seed, which orders the examples a share keeps; None for the whole split, which it
    does not change (so changing it reruns no run of the main curve)."""
    return EXP.fraction_seed if train_percent(wildcards) < 100 else None


def efficiency_runs():
    """Every metrics.json of the sample-efficiency study: each target, percent and seed, from every model of
    the main curve (the original model included). 100 % of a target of the main curve is that curve's run."""
    runs = []
    for target in EXP.efficiency_targets:
        for pct in EXP.percents:
            if pct == 100 and target in EXP.targets:  # the main curve's own runs: the whole training split
                runs += finetune_runs("results", [target])
                continue
            if 0 in EXP.counts:
                runs += expand(f"{EFFICIENCY}/k0/{target}/pct{pct}/seed{{seed}}/metrics.json", seed=EXP.seeds)
            runs += expand(f"{EFFICIENCY}/k{{k}}/draw{{draw}}/{target}/pct{pct}/seed{{seed}}/metrics.json",
                           k=[k for k in EXP.counts if k > 0], draw=EXP.draws, seed=EXP.seeds)
    return runs


def efficiency_outputs():
    return expand(f"{EFFICIENCY}/{{name}}", name=["sample_efficiency.csv", "sample_efficiency.pdf", "sample_efficiency.png"])


def aggregate_runs(wildcards):
    return finetune_runs(wildcards.root)


def variant_of(wildcards):
    return root_variant(wildcards.root)


def curve_name(wildcards):
    variant = root_variant(wildcards.root)
    return f"{'pre-finetuning' if variant == MAIN else f'ablation: {variant}'}, {MODEL}"


def plot_title(wildcards):
    return f"{curve_name(wildcards)}: target performance vs number of pre-finetuning tasks"


def train_logs(wildcards):
    """The pre-finetuning log of every model of one root."""
    return expand(f"{wildcards.root}/prefinetune/k{{k}}/draw{{draw}}/train_log.tsv",
                  k=[k for k in EXP.counts if k > 0], draw=EXP.draws)


def transfer_title(wildcards):
    return f"per-task transfer, {curve_name(wildcards)}: effect of a task in the subset, k fixed"


def loss_title(wildcards):
    return f"pre-finetuning loss, {curve_name(wildcards)}"


CURVE_FILES = ["scaling.csv", "scaling_curve.pdf", "scaling_curve.png", "critical_point.csv", "transfer.csv",
               "transfer.pdf", "transfer.png", "prefinetune_loss.pdf", "prefinetune_loss.png"]


def curve_outputs(variants):
    roots = [variant_root(v) for v in variants]
    return expand("{root}/{name}", root=roots, name=CURVE_FILES)


def all_outputs():
    """The paper's curve and the subsets it was drawn from."""
    return [*expand("results/subsets/draw{draw}.yaml", draw=EXP.draws), *curve_outputs([MAIN])]


def ablation_outputs():
    ablations = [v for v in EXP.variants if v != MAIN]
    comparison = expand(f"{ABLATION_ROOT}/comparison.{{ext}}", ext=["csv", "pdf", "png"]) if ablations else []
    return [*curve_outputs(ablations), *comparison]


# -- the cost plan (rules/plan.smk) -------------------------------------------------------------------------------
def plan_jobs():
    """Every training job of the curve, the ablations and the sample-efficiency study, once each, as the plan
    prices it: rule, output, tasks, settings, runtime and GPUs (the same lists the rules above are built from)."""
    jobs = []

    def add(part, name, output, label, tasks, settings, res, percent=100):
        jobs.append({"part": part, "rule": name, "output": output, "label": label, "tasks": tasks,
                     "settings": settings, "percent": percent, "runtime": res["runtime"],
                     "gpus": max(1, res["gpus"]) * res["nodes"]})

    for variant in EXP.variants:
        root, part = variant_root(variant), "curve" if variant == MAIN else "ablations"
        for k in [k for k in EXP.counts if k > 0]:
            for draw in EXP.draws:
                add(part, "prefinetune", f"{root}/prefinetune/k{k}/draw{draw}/model", f"k={k}",
                    EXP.subset(k, draw), EXP.prefinetune_settings(variant), RES["prefinetune"])
    runs = [*finetune_runs("results"), *[r for v in EXP.variants if v != MAIN for r in finetune_runs(variant_root(v))],
            *[r for r in efficiency_runs() if r.startswith(EFFICIENCY)]]  # at 100 %: the curve's own runs
    for run in dict.fromkeys(runs):  # the k = 0 baseline is shared by the curve and the ablations: once
        parts = Path(run).parts
        target, pct = parts[-3], 100
        if run.startswith(EFFICIENCY):
            target, pct = parts[-4], int(parts[-3][len("pct"):])
        name = ("finetune_fraction" if run.startswith(EFFICIENCY) else "finetune") + ("_baseline" if "k0" in parts else "")
        part = "sample_efficiency" if run.startswith(EFFICIENCY) else "ablations" if run.startswith(ABLATION_ROOT) else "curve"
        add(part, name, run, target, [target], EXP.finetune_settings(target), RES["finetune"], pct)
    return jobs


def plan_tokenized(wildcards):
    """The tokenized data and model that exist already: the plan counts their real tokens and parameters."""
    paths = [tokenized(t) for t in EXP.used_tasks] + [model_dir()]
    return [p for p in paths if Path(p).exists()]


def plan_tasks():
    return {name: {"type": t.type, "num_labels": t.num_labels, "size": t.size, "source": t.source}
            for name, t in EXP.tasks.items()
            if name in EXP.used_tasks}
