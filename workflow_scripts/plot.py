"""Snakemake entry point: the scaling curve or the sample-efficiency figure (PDF for papers, PNG for the report)."""
import pandas as pd

from prefinetune.plotting import plot_efficiency, plot_scaling
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    plot = plot_efficiency if snakemake.params.get("figure") == "efficiency" else plot_scaling
    plot(pd.read_csv(snakemake.input[0]), snakemake.output.pdf, snakemake.output.png, snakemake.params.title)
