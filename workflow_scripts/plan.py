"""Snakemake entry point: price every training job of the DAG (prefinetune.plan); print the bill and write it."""
import sys

from prefinetune.plan import Pricer, write_bill
from prefinetune.workflow import logging_to

p = snakemake.params
with logging_to(snakemake.log[0]):
    pricer = Pricer(p.tasks, p.tokenized, p.models, p.throughput, p.max_length, p.doc_stride)
    text = write_bill(p.jobs, pricer, snakemake.output.summary, snakemake.output.jobs)
    print(text)
sys.stdout.write(text)  # also to the terminal, where the command was typed
