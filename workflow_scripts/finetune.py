"""Snakemake entry point: fine-tune one target with one seed and write its metrics. Run options (log and
checkpoint intervals and folder, evaluation batch size, allow_cpu) come from the config, not params: they do not
change the result. A job that asks for a GPU and sees none stops at once (prefinetune.device)."""
import torch

from prefinetune.config import allow_cpu, report_to, run_options
from prefinetune.device import require_gpus
from prefinetune.stages import finetune
from prefinetune.tasks import from_params
from prefinetune.workflow import checkpoint_dir, holding, live_dir, logging_to

live = live_dir(snakemake.output.metrics)  # the live record, and every attempt's log (attempts.log)
checkpoints = checkpoint_dir(snakemake.output.metrics, snakemake.config)
with logging_to(snakemake.log[0], f"{live}/attempts.log"), holding(checkpoints):
    require_gpus(int(snakemake.resources.get("gpu", 0)), allow_cpu(snakemake.config))
    torch.set_num_threads(snakemake.threads)
    settings = {**snakemake.params.settings, **run_options(snakemake.config, "finetune"),
                "report_to": report_to(snakemake.config)}
    finetune(from_params(snakemake.params.target), snakemake.input.data, snakemake.input.encoder, settings,
             int(snakemake.wildcards.seed), snakemake.output.metrics, snakemake.output.log_tsv, snakemake.params.meta,
             percent=snakemake.params.percent, fraction_seed=snakemake.params.fraction_seed,
             checkpoint_dir=checkpoints, live_dir=live)
