# Sample efficiency (Muppet, section "sample efficiency"): each sample_efficiency target fine-tuned on nested
# shares of its training data (percents), from every model of the main curve. Built only when asked for:
#   snakemake --profile slurm sample_efficiency   (the embedded default: snakemake --cores 2 --directory demo sample_efficiency)


use rule finetune as finetune_fraction with:
    output:
        metrics=f"{FRACTION}/metrics.json",
        log_tsv=f"{FRACTION}/train_log.tsv",
    log:
        log(FRACTION),
    benchmark:
        benchmark(FRACTION)


use rule finetune as finetune_fraction_baseline with:
    output:
        metrics=f"{FRACTION_BASELINE}/metrics.json",
        log_tsv=f"{FRACTION_BASELINE}/train_log.tsv",
    log:
        log(FRACTION_BASELINE),
    benchmark:
        benchmark(FRACTION_BASELINE)


localrules:
    aggregate_efficiency,
    plot_efficiency,


rule aggregate_efficiency:
    input:
        efficiency_runs(),
    output:
        report(f"{EFFICIENCY}/sample_efficiency.csv", caption="../report/sample_efficiency.rst",
               category="Sample efficiency", labels={"figure": "table"}),
    params:
        variant="sample_efficiency",
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/{EFFICIENCY}/aggregate.log",
    benchmark:
        f"benchmarks/{EFFICIENCY}/aggregate.tsv"
    script:
        "../workflow_scripts/aggregate.py"


rule plot_efficiency:
    input:
        rules.aggregate_efficiency.output[0],
    output:
        pdf=f"{EFFICIENCY}/sample_efficiency.pdf",
        png=report(f"{EFFICIENCY}/sample_efficiency.png", caption="../report/sample_efficiency.rst",
                   category="Sample efficiency", labels={"figure": "curve"}),
    params:
        title=f"sample efficiency, {MODEL}: fine-tuning on a share of the training data, per pre-finetuning k",
        figure="efficiency",
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/{EFFICIENCY}/plot.log",
    benchmark:
        f"benchmarks/{EFFICIENCY}/plot.tsv"
    script:
        "../workflow_scripts/plot.py"
