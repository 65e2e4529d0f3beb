"""Snakemake entry point: the critical-point table and the per-task transfer table of one curve."""
from prefinetune.analysis import critical_table, read_orders, read_scaling, transfer_map, write_table
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    table = read_scaling(snakemake.input.table)
    write_table(critical_table(table, snakemake.params.variant), snakemake.output.critical)
    write_table(transfer_map(table, read_orders(snakemake.input.orders), snakemake.params.variant),
                snakemake.output.transfer)
