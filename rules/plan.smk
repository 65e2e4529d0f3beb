# The bill before launch: examples, tokens and GPU-hours of every training job of the DAG (the curve, the
# reference models, the ablations, the sample-efficiency study), per rule and in total, each job against its
# runtime, and the time each job asks Slurm for (the same values as the rules' runtime resource). A local
# rule: it runs offline, before anything is downloaded (rough sizes from the registry), and again once data is
# tokenized (real token counts): the tokenized data that exists is its input.
#   snakemake --cores 1 plan   ->  results/plan.tsv (summary), results/plan_jobs.tsv (one row per job),
#                                   results/plan_disk.tsv (disk)


localrules:
    cost_plan,


rule cost_plan:
    input:
        plan_tokenized,
    output:
        summary="results/plan.tsv",
        jobs="results/plan_jobs.tsv",
        disk="results/plan_disk.tsv",
    params:  # functions: computed only where the plan runs, not when a job's own Snakemake reads the workflow
        jobs=lambda wildcards: plan_jobs(),
        tasks=lambda wildcards: plan_tasks(),
        tokenized=lambda wildcards: plan_tokenized_paths(),
        models=lambda wildcards: plan_models(),
        datasets=lambda wildcards: plan_datasets(),
        sources=lambda wildcards: plan_model_sources(),
        places=lambda wildcards: plan_places(),
        throughput=registry.plain(EXP.config["plan"]),
        max_length=EXP.config["max_length"],
        doc_stride=EXP.config["doc_stride"],
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/plan.log",
    benchmark:
        "benchmarks/plan.tsv"
    script:
        "../workflow_scripts/plan.py"
