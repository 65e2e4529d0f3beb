"""Snakemake entry point: price every training job of the DAG (prefinetune.plan) and the disk it needs
(prefinetune.disk); print the bill and write it."""
import sys

from prefinetune.disk import disk_lines, disk_rows
from prefinetune.io import write_text
from prefinetune.plan import Pricer, tsv, write_bill
from prefinetune.workflow import logging_to

p = snakemake.params
with logging_to(snakemake.log[0]):
    pricer = Pricer(p.tasks, p.tokenized, p.models, p.throughput, p.max_length, p.doc_stride)
    text = write_bill(p.jobs, pricer, snakemake.output.summary, snakemake.output.jobs)
    at_once = pricer.throughput["jobs_at_once"]
    disk = disk_rows(p.jobs, pricer, p.datasets, p.sources, at_once, p.places)
    write_text(snakemake.output.disk, tsv(disk))
    text += "\n".join(disk_lines(disk, at_once)) + "\n"
    print(text)
sys.stdout.write(text)  # also to the terminal, where the command was typed
