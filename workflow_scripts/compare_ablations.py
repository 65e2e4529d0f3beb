"""Snakemake entry point: every variant's critical points in one table, and the ablations against the main
curve in one figure."""
import pandas as pd

from prefinetune.analysis import read_scaling, write_table
from prefinetune.breakpoint import LEVEL, N_BOOT
from prefinetune.plotting import plot_comparison
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    write_table(pd.concat([pd.read_csv(p) for p in snakemake.input.critical], ignore_index=True),
                snakemake.output.table)
    tables = {v: read_scaling(p) for v, p in zip(snakemake.params.variants, snakemake.input.tables)}
    plot_comparison(tables, snakemake.output.pdf, snakemake.output.png, snakemake.params.title, N_BOOT, LEVEL)
