"""Snakemake entry point: pre-finetune one model on one task subset."""
import torch

from prefinetune.stages import prefinetune
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    tasks = snakemake.params.tasks
    prefinetune(tasks, dict(zip([t.name for t in tasks], snakemake.input.data)), snakemake.input.base,
                snakemake.params.settings, snakemake.output.model, snakemake.output.log_tsv)
