# Data and model onto disk. Local rules: on a cluster they run where Snakemake runs (the login node, which
# has internet); compute nodes then read only local files.


localrules:
    download_dataset,
    download_model,
    download_reference,


rule download_dataset:
    output:
        directory(DATASET),
    params:
        task=download_params,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/download/{task}.log",
    benchmark:
        "benchmarks/download/{task}.tsv"
    script:
        "../workflow_scripts/download_dataset.py"


rule download_model:
    input:
        texts=model_build_texts,
    output:
        directory(MODEL_DIR),
    params:
        model=registry.plain(EXP.config["model"]),
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/download/model_{MODEL}.log",
    benchmark:
        f"benchmarks/download/model_{MODEL}.tsv"
    script:
        "../workflow_scripts/download_model.py"


# A reference model (config reference_models): a published checkpoint, into resources/models/<its name>.
rule download_reference:
    output:
        directory(REFERENCE_MODEL_DIR),
    params:
        model=reference_params,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/download/model_{reference}.log",
    benchmark:
        "benchmarks/download/model_{reference}.tsv"
    script:
        "../workflow_scripts/download_model.py"
