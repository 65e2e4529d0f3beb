# Per draw, a seeded order of the pool; the subset of size k is its first k tasks (nested, as in the paper).


localrules:
    subsets,


rule subsets:
    output:
        report(SUBSETS, caption="../report/subsets.rst", category="Task subsets"),
    params:
        order=lambda wildcards: EXP.order(int(wildcards.draw)),
        protocol=EXP.config["protocol"],
        seed=EXP.config["seed"],
    conda:
        "../envs/prefinetune.yaml"
    log:
        "logs/subsets/draw{draw}.log",
    benchmark:
        "benchmarks/subsets/draw{draw}.tsv"
    script:
        "../workflow_scripts/subsets.py"
