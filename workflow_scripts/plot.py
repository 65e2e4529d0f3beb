"""Snakemake entry point: the scaling curve (PDF for papers, PNG for the report)."""
import pandas as pd

from prefinetune.plotting import plot_scaling
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    plot_scaling(pd.read_csv(snakemake.input[0]), snakemake.output.pdf, snakemake.output.png, snakemake.params.title)
