"""Snakemake entry point: write one draw's task order, from which every subset is read off."""
from prefinetune.subsets import write_order
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    write_order(snakemake.output[0], int(snakemake.wildcards.draw), snakemake.params.order,
                snakemake.params.protocol, snakemake.params.seed)
