"""Snakemake entry point: the pre-finetuning loss curves of every model of one curve."""
from prefinetune.analysis import read_train_logs
from prefinetune.plotting import plot_losses
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    plot_losses(read_train_logs(list(snakemake.input)), snakemake.output.pdf, snakemake.output.png,
                snakemake.params.title)
