# One multi-task model per (task count k, draw), for the main method and for each ablation root.
# With resources.prefinetune.gpus > 1 the job runs one process per GPU (torchrun); with nodes > 1, on each of
# that many nodes (see prefinetune_resources). Checkpoints go to <config checkpoints>/<output folder>, outside the
# outputs (Snakemake deletes a failed job's outputs): a rerun resumes from them. Where they go is read by the job
# from the config, not params: moving them reruns nothing.


rule prefinetune:
    input:
        unpack(prefinetune_inputs),
    output:
        model=directory(f"{PREFINETUNED}/model"),
        log_tsv=f"{PREFINETUNED}/train_log.tsv",
    params:
        tasks=subset_params,
        settings=prefinetune_settings,
    conda:
        "../envs/prefinetune.yaml"
    log:
        log(PREFINETUNED),
    benchmark:
        benchmark(PREFINETUNED)
    threads: RES["prefinetune"]["threads"]
    resources:
        runtime=train_runtime,  # the plan's estimate, see train_runtime in rules/common.smk
        mem_mb=RES["prefinetune"]["mem_mb"],
        **prefinetune_resources(),
    script:
        "../workflow_scripts/prefinetune.py"
