"""Snakemake entry point: pre-finetune one model on one task subset, on one process or one per GPU."""
import sys
from pathlib import Path

import torch

from prefinetune import launch
from prefinetune.stages import prefinetune
from prefinetune.workflow import logging_to

tasks = snakemake.params.tasks
args = dict(tasks=tasks, tokenized=dict(zip([t.name for t in tasks], snakemake.input.data)),
            base_model=snakemake.input.base, settings=snakemake.params.settings, out_dir=snakemake.output.model,
            log_tsv=snakemake.output.log_tsv, checkpoint_dir=snakemake.params.checkpoints)
processes = max(int(snakemake.resources.gpu), 1)

with logging_to(snakemake.log[0]) as log:
    if processes == 1:
        torch.set_num_threads(snakemake.threads)
        prefinetune(**args)
    else:
        job = Path(snakemake.params.checkpoints) / "job.json"
        launch.write_job(job, **args)
        code = launch.run(job, processes, threads=snakemake.threads, log=log)
        if code != 0:
            print(f"torchrun with {processes} processes exited with code {code}", file=sys.stderr)
            sys.exit(code)
