"""Snakemake entry point: pre-finetune one model on one task subset: one process, one per GPU, or one per GPU
on each of several nodes, as the job's resources ask (from config.yaml's resources.prefinetune; resources,
unlike params, do not make finished jobs rerun when they change). Run options (log and checkpoint intervals,
the checkpoint folder, allow_cpu) come from the config, not params, for the same reason. A job that asks for GPUs
and sees none stops at once (prefinetune.device)."""
import sys
from pathlib import Path

import torch

from prefinetune import launch
from prefinetune.config import allow_cpu, report_to, run_options
from prefinetune.device import require_gpus
from prefinetune.stages import prefinetune
from prefinetune.tasks import from_params
from prefinetune.workflow import checkpoint_dir, holding, live_dir, logging_to

tasks = [from_params(t) for t in snakemake.params.tasks]
settings = {**snakemake.params.settings, **run_options(snakemake.config, "prefinetune"),
                "report_to": report_to(snakemake.config)}
args = dict(tasks=tasks, tokenized=dict(zip([t.name for t in tasks], snakemake.input.data)),
            base_model=snakemake.input.base, settings=settings, out_dir=snakemake.output.model,
            log_tsv=snakemake.output.log_tsv, checkpoint_dir=checkpoint_dir(snakemake.output.log_tsv, snakemake.config),
            live_dir=live_dir(snakemake.output.log_tsv))
history = Path(args["live_dir"]) / "attempts.log"  # every attempt's log, kept across retries
nodes = int(snakemake.resources.get("nodes", 1))
gpus = int(snakemake.resources.get("gpu", 0)) if nodes == 1 else launch.gres_gpus(snakemake.resources.get("gres", ""))
processes = max(gpus, 1)  # per node

with logging_to(snakemake.log[0], history) as log, holding(args["checkpoint_dir"]):
    require_gpus(gpus, allow_cpu(snakemake.config))  # GPUs per node: this node's
    if nodes == 1 and processes == 1:
        torch.set_num_threads(snakemake.threads)
        prefinetune(**args)
    else:
        job = Path(args["checkpoint_dir"]) / "job.json"
        launch.write_job(job, **args)
        code = launch.run(job, processes, threads=snakemake.threads, log=log, nodes=nodes, gpus=gpus)
        if code != 0:
            print(f"pre-finetuning on {nodes} node(s) x {processes} process(es) exited with code {code}",
                  file=sys.stderr)
            sys.exit(code)
