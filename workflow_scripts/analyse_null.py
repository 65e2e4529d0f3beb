"""Snakemake entry point: the null arm against the main curve: content transfer per target and k, and the critical
points of the main curve, the null curve and their difference."""
from prefinetune.analysis import read_scaling, write_table
from prefinetune.content import content_table, critical_by_curve, paired_runs
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    paired = paired_runs(read_scaling(snakemake.input.main), read_scaling(snakemake.input.null))
    write_table(content_table(paired), snakemake.output.content)
    write_table(critical_by_curve(paired), snakemake.output.critical)
