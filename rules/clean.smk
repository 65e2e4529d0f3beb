# Removes the checkpoints of training jobs that are not running (failed for good, stopped, killed) from the config's
# checkpoint folder. A job holds its folder while it runs (owner.json: host, process, Slurm job); a folder whose
# Slurm job squeue still lists (running, pending, requeued), or whose process runs on this host, is kept.
#   snakemake --cores 1 clean_checkpoints


localrules:
    clean_checkpoints,


rule clean_checkpoints:
    params:
        folder=checkpoint_root(EXP.config),
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/clean_checkpoints.log",
    # no benchmark: Snakemake would count its file as this rule's output, and run the rule only once
    script:
        "../workflow_scripts/clean_checkpoints.py"
