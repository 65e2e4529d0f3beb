# The null arm (config null_arm): on its task counts, every (k, draw) model of the main curve pre-finetuned again on
# the same subset with its labels destroyed, everything else kept (rule prefinetune under results/null/), then
# fine-tuned exactly like the main curve (rule finetune; k = 0 is shared) and gathered (rule aggregate). Here it is
# compared with the main curve, model by model (the same k and draw): content transfer = main - null per target and
# k, and the critical point and break-even of the main curve, the null curve and their difference.


localrules:
    analyse_null,
    plot_null,


rule analyse_null:
    input:
        main=rules.aggregate.output[0].format(root="results"),
        null=rules.aggregate.output[0].format(root=NULL_ROOT),
    output:
        content=report(f"{NULL_ROOT}/content_transfer.csv", caption="../report/content_transfer.rst",
                       category="Null arm", labels={"figure": "content transfer"}),
        critical=report(f"{NULL_ROOT}/critical_point_by_curve.csv", caption="../report/content_transfer.rst",
                        category="Null arm", labels={"figure": "critical points"}),
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/{NULL_ROOT}/analyse_null.log",
    benchmark:
        f"benchmarks/{NULL_ROOT}/analyse_null.tsv"
    script:
        "../workflow_scripts/analyse_null.py"


rule plot_null:
    input:
        main=rules.analyse_null.input.main,
        null=rules.analyse_null.input.null,
        content=rules.analyse_null.output.content,
    output:
        pdf=f"{NULL_ROOT}/null_arm.pdf",
        png=report(f"{NULL_ROOT}/null_arm.png", caption="../report/null_arm.rst", category="Null arm",
                   labels={"figure": "main and null curves"}),
    params:
        title=f"what the labels teach, {MODEL}: the main curve, the null arm (labels destroyed) and their difference",
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/{NULL_ROOT}/plot_null.log",
    benchmark:
        f"benchmarks/{NULL_ROOT}/plot_null.tsv"
    script:
        "../workflow_scripts/plot_null.py"
