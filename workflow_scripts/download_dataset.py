"""Snakemake entry point: one dataset from the registry onto disk (hub, local files or generator)."""
from pathlib import Path

from prefinetune.data import download
from prefinetune.tasks import from_params
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    download(from_params(snakemake.params.task), snakemake.output[0], repo=Path(snakemake.scriptdir).parent)
