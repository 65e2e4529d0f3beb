# Muppet pre-finetuning: the task-scaling curve as one DAG.
#   download -> tokenize -> subsets -> prefinetune (k, draw) -> finetune (target, seed) -> aggregate -> plot
# The null arm (snakemake null): the same models on the same subsets, their labels destroyed, against the curve.
# Run the embedded default:  snakemake --cores 2 --directory demo
# Run the cluster experiment: snakemake --profile slurm results/scaling_curve.pdf
# What it will cost:         snakemake --cores 1 plan   (results/plan.tsv)
# Checkpoints of jobs that are not running, removed:  snakemake --cores 1 clean_checkpoints

import sys
from pathlib import Path

from prefinetune.tasks import ConfigError, read_yaml

# A YAML mistake in config.yaml stops here, naming its line and column (Snakemake's own message names neither).
# A --configfile is read by Snakemake before this file: its syntax errors get Snakemake's message.
try:
    if Path("config.yaml").is_file():
        read_yaml("config.yaml")
except ConfigError as error:
    sys.exit(f"Config error: {error}")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/tokenize.smk"
include: "rules/subsets.smk"
include: "rules/prefinetune.smk"
include: "rules/finetune.smk"
include: "rules/aggregate.smk"
include: "rules/sample_efficiency.smk"
include: "rules/null.smk"
include: "rules/plan.smk"
include: "rules/clean.smk"


report: "report/workflow.rst"


rule all:
    input:
        all_outputs(),
    default_target: True


# Every ablation named in config: results/ablations/<name>/scaling_curve.pdf
rule ablations:
    input:
        ablation_outputs(),


# The null arm (config null_arm): the same subsets with their labels destroyed, and content transfer = main - null:
# results/null/content_transfer.csv, critical_point_by_curve.csv, null_arm.pdf
rule null:
    input:
        null_outputs(),


# The sample-efficiency study (config sample_efficiency): results/sample_efficiency/sample_efficiency.pdf
rule sample_efficiency:
    input:
        efficiency_outputs(),


# The bill before launch (rules/plan.smk): results/plan.tsv, printed too. Offline, before any download.
rule plan:
    input:
        rules.cost_plan.output,
