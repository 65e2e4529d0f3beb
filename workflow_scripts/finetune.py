"""Snakemake entry point: fine-tune one target with one seed and write its metrics."""
import torch

from prefinetune.stages import finetune
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    finetune(snakemake.params.target, snakemake.input.data, snakemake.input.encoder, snakemake.params.settings,
             int(snakemake.wildcards.seed), snakemake.output.metrics, snakemake.output.log_tsv, snakemake.params.meta,
             percent=snakemake.params.percent, fraction_seed=snakemake.params.fraction_seed)
