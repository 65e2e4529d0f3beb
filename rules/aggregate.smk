# One table and one curve per root: results/ for the paper's method, results/ablations/<name>/ for each ablation.
# Per root also: the critical point and per-task transfer (analyse), the transfer map and the loss curves of
# its pre-finetuned models; across roots: the ablations against the main curve (compare_ablations).


localrules:
    aggregate,
    analyse,
    plot,
    plot_transfer,
    plot_losses,
    compare_ablations,


rule aggregate:
    input:
        aggregate_runs,
    output:
        report("{root}/scaling.csv", caption="../report/scaling_table.rst", category="Scaling curve",
               labels={"variant": "{root}", "figure": "table"}),
    params:
        variant=variant_of,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/{root}/aggregate.log",
    benchmark:
        "benchmarks/{root}/aggregate.tsv"
    script:
        "../workflow_scripts/aggregate.py"


rule analyse:
    input:
        table=rules.aggregate.output[0],
        orders=expand(rules.subsets.output[0], draw=EXP.draws),
    output:
        critical=report("{root}/critical_point.csv", caption="../report/critical_point.rst",
                        category="Scaling curve", labels={"variant": "{root}", "figure": "critical point"}),
        transfer="{root}/transfer.csv",
    params:
        variant=variant_of,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/{root}/analyse.log",
    benchmark:
        "benchmarks/{root}/analyse.tsv"
    script:
        "../workflow_scripts/analyse.py"


rule plot:
    input:
        rules.aggregate.output[0],
        critical=rules.analyse.output.critical,
    output:
        pdf="{root}/scaling_curve.pdf",
        png=report("{root}/scaling_curve.png", caption="../report/scaling_curve.rst", category="Scaling curve",
                   labels={"variant": "{root}", "figure": "curve"}),
    params:
        title=plot_title,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/{root}/plot.log",
    benchmark:
        "benchmarks/{root}/plot.tsv"
    script:
        "../workflow_scripts/plot.py"


rule plot_transfer:
    input:
        rules.analyse.output.transfer,
    output:
        pdf="{root}/transfer.pdf",
        png=report("{root}/transfer.png", caption="../report/transfer.rst", category="Transfer",
                   labels={"variant": "{root}", "figure": "transfer map"}),
    params:
        title=transfer_title,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/{root}/plot_transfer.log",
    benchmark:
        "benchmarks/{root}/plot_transfer.tsv"
    script:
        "../workflow_scripts/plot_transfer.py"


rule plot_losses:
    input:
        train_logs,
    output:
        pdf="{root}/prefinetune_loss.pdf",
        png=report("{root}/prefinetune_loss.png", caption="../report/prefinetune_loss.rst",
                   category="Pre-finetuning", labels={"variant": "{root}", "figure": "loss curves"}),
    params:
        title=loss_title,
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/{root}/plot_losses.log",
    benchmark:
        "benchmarks/{root}/plot_losses.tsv"
    script:
        "../workflow_scripts/plot_losses.py"


rule compare_ablations:
    input:
        tables=expand(rules.aggregate.output[0], root=[variant_root(v) for v in EXP.variants]),
        critical=expand(rules.analyse.output.critical, root=[variant_root(v) for v in EXP.variants]),
    output:
        table=report(f"{ABLATIONS}/comparison.csv", caption="../report/ablation_comparison.rst",
                     category="Ablations", labels={"figure": "critical points"}),
        pdf=f"{ABLATIONS}/comparison.pdf",
        png=report(f"{ABLATIONS}/comparison.png", caption="../report/ablation_comparison.rst",
                   category="Ablations", labels={"figure": "comparison"}),
    params:
        variants=EXP.variants,
        title=f"ablations against the main curve, {MODEL}",
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/{ABLATIONS}/comparison.log",
    benchmark:
        f"benchmarks/{ABLATIONS}/comparison.tsv"
    script:
        "../workflow_scripts/compare_ablations.py"
