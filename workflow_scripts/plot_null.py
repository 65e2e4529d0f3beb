"""Snakemake entry point: the main curve and the null arm, and their difference (PDF, and PNG for the report)."""
import pandas as pd

from prefinetune.analysis import read_scaling
from prefinetune.content import paired_runs
from prefinetune.plotting import plot_null
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    paired = paired_runs(read_scaling(snakemake.input.main), read_scaling(snakemake.input.null))
    plot_null(paired, pd.read_csv(snakemake.input.content), snakemake.output.pdf, snakemake.output.png,
              snakemake.params.title)
