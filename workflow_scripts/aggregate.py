"""Snakemake entry point: one row per fine-tuning run into scaling.csv."""
from prefinetune.analysis import collect, write_table
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    write_table(collect(list(snakemake.input), snakemake.params.variant), snakemake.output[0])
