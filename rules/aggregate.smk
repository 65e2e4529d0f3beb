# One table and one curve per root: results/ for the paper's method, results/ablations/<name>/ for each ablation.


localrules:
    aggregate,
    plot,


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


rule plot:
    input:
        "{root}/scaling.csv",
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
