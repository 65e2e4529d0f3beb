"""Snakemake entry point: remove the checkpoints of training jobs that are not running (prefinetune.workflow)."""
import sys

from prefinetune.workflow import clean_checkpoints, logging_to

with logging_to(snakemake.log[0]):
    removed, kept = clean_checkpoints(snakemake.params.folder)
    lines = [f"removed {folder}" for folder in removed] + [f"kept {folder}: {why}" for folder, why in kept]
    text = "\n".join([*lines, f"{len(removed)} checkpoint folder(s) removed, {len(kept)} kept, under "
                                f"{snakemake.params.folder}"]) + "\n"
    print(text, end="")
sys.stdout.write(text)
