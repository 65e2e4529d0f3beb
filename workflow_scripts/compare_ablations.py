"""Snakemake entry point: every variant's critical points in one table, and the ablations against the main
curve in one figure."""
from prefinetune.breakpoint import LEVEL, N_BOOT
from prefinetune.plotting import write_comparison
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    out = snakemake.output
    write_comparison(snakemake.params.variants, snakemake.input.tables, snakemake.input.critical, out.table,
                     out.pdf, out.png, snakemake.params.title, N_BOOT, LEVEL)
