# Sample efficiency (Muppet, section "sample efficiency"): each sample_efficiency target fine-tuned on nested
# shares of its training data (percents), from every model of the main curve. Built only when asked for:
#   snakemake ... sample_efficiency


use rule finetune as finetune_fraction with:
    output:
        metrics=f"{EFFICIENCY}/k{{k}}/draw{{draw}}/{{target}}/pct{{pct}}/seed{{seed}}/metrics.json",
        log_tsv=f"{EFFICIENCY}/k{{k}}/draw{{draw}}/{{target}}/pct{{pct}}/seed{{seed}}/train_log.tsv",
    log:
        f"logs/{EFFICIENCY}/k{{k}}/draw{{draw}}/{{target}}/pct{{pct}}/seed{{seed}}.log",
    benchmark:
        f"benchmarks/{EFFICIENCY}/k{{k}}/draw{{draw}}/{{target}}/pct{{pct}}/seed{{seed}}.tsv"


use rule finetune as finetune_fraction_baseline with:
    output:
        metrics=f"{EFFICIENCY}/k0/{{target}}/pct{{pct}}/seed{{seed}}/metrics.json",
        log_tsv=f"{EFFICIENCY}/k0/{{target}}/pct{{pct}}/seed{{seed}}/train_log.tsv",
    log:
        f"logs/{EFFICIENCY}/k0/{{target}}/pct{{pct}}/seed{{seed}}.log",
    benchmark:
        f"benchmarks/{EFFICIENCY}/k0/{{target}}/pct{{pct}}/seed{{seed}}.tsv"


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
        f"{EFFICIENCY}/sample_efficiency.csv",
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
