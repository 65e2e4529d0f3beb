"""Snakemake entry point: price every training job of the DAG (prefinetune.plan); print the bill and write it."""
import sys
from pathlib import Path

from prefinetune import plan
from prefinetune.io import write_text
from prefinetune.workflow import logging_to

p = snakemake.params
with logging_to(snakemake.log[0]):
    sizes = {name: plan.exact_size(path) if Path(path).exists() else
             plan.rough_size(name, p.tasks[name], p.max_length, p.doc_stride) for name, path in p.tokenized.items()}
    params = plan.model_parameters(p.model) if Path(p.model).exists() else p.throughput["model_params"]
    if not params:
        print(f"Config error: plan.model_params: needed until the model is in {p.model} (run the download_model rule, "
              f"or give the model's parameter count)", file=sys.stderr)
        sys.exit(1)
    rate, throughput = plan.tokens_per_second(p.throughput, params)
    rows = plan.estimate(p.jobs, sizes, rate)
    summary = plan.summarize(rows)
    text = plan.bill(summary, plan.over_runtime(rows), throughput)
    write_text(snakemake.output.summary, plan.tsv(summary))
    write_text(snakemake.output.jobs, plan.tsv(rows))
    print(text)
sys.stdout.write(text)  # also to the terminal, where the command was typed
