"""Snakemake entry point: the model's tokenizer and encoder into resources/models/<name>/."""
from prefinetune.models import fetch, texts_of
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    fetch(snakemake.params.model, snakemake.output[0], texts=texts_of(snakemake.input.texts))
