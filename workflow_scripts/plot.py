"""Snakemake entry point: the scaling curve (marked with its critical point) or the sample-efficiency figure
(PDF for papers, PNG for the report)."""
import pandas as pd

from prefinetune.plotting import plot_efficiency, plot_scaling
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    table = pd.read_csv(snakemake.input[0])
    if snakemake.params.get("figure") == "efficiency":
        plot_efficiency(table, snakemake.output.pdf, snakemake.output.png, snakemake.params.title)
    else:
        critical = pd.read_csv(snakemake.input.critical)
        plot_scaling(table, snakemake.output.pdf, snakemake.output.png, snakemake.params.title, critical)
