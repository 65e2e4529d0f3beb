"""Snakemake entry point: the model's (or a reference model's) tokenizer and encoder into resources/models/<name>/."""
from prefinetune.models import fetch, texts_of
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    texts = snakemake.input.texts if "texts" in snakemake.input.keys() else []  # only a built model reads texts
    fetch(snakemake.params.model, snakemake.output[0], texts=texts_of(texts))
