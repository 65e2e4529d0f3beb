"""Snakemake entry point: the per-task transfer heat map."""
import pandas as pd

from prefinetune.plotting import plot_transfer
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    plot_transfer(pd.read_csv(snakemake.input[0]), snakemake.output.pdf, snakemake.output.png,
                  snakemake.params.title)
