"""Snakemake entry point: tokenize one dataset with the model's tokenizer."""
from prefinetune.data import tokenize
from prefinetune.tasks import from_params
from prefinetune.workflow import logging_to

with logging_to(snakemake.log[0]):
    tokenize(from_params(snakemake.params.task), snakemake.input.data, snakemake.input.model, snakemake.output[0],
             snakemake.params.max_length, num_proc=snakemake.threads, doc_stride=snakemake.params.doc_stride)
