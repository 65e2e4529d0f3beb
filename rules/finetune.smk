# Fine-tune every target with several seeds: from each pre-finetuned model, from the original model (k = 0, the
# baseline: computed once, shared by all draws and ablations), and from each reference model (a published
# checkpoint, fine-tuned exactly like k = 0: results/reference/<name>/). Settings: config finetune, with the
# target's finetune_overrides. Checkpoints go to <config checkpoints>/<output folder> (outside the outputs, which
# Snakemake deletes when a job fails): a rerun resumes from them. Log and checkpoint intervals, the evaluation
# batch size and the checkpoint folder are read by the job from the config, not params: changing them reruns
# nothing.


rule finetune:
    input:
        encoder=finetune_encoder,
        data=target_tokenized,
    output:
        metrics=f"{FINETUNED}/metrics.json",
        log_tsv=f"{FINETUNED}/train_log.tsv",
    params:
        target=target_params,
        settings=finetune_settings,
        meta=finetune_meta,
        percent=train_percent,
        fraction_seed=fraction_order_seed,
    conda:
        "../envs/prefinetune.yaml"
    log:
        log(FINETUNED),
    benchmark:
        benchmark(FINETUNED)
    threads: RES["finetune"]["threads"]
    resources:
        runtime=train_runtime,  # the plan's estimate, see train_runtime in rules/common.smk
        mem_mb=RES["finetune"]["mem_mb"],
        gpu=RES["finetune"]["gpus"],
    script:
        "../workflow_scripts/finetune.py"


use rule finetune as finetune_baseline with:
    output:
        metrics=f"{BASELINE}/metrics.json",
        log_tsv=f"{BASELINE}/train_log.tsv",
    log:
        log(BASELINE),
    benchmark:
        benchmark(BASELINE)


use rule finetune as finetune_reference with:
    input:
        encoder=reference_encoder,
        data=reference_tokenized,
    output:
        metrics=f"{REFERENCE_RUN}/metrics.json",
        log_tsv=f"{REFERENCE_RUN}/train_log.tsv",
    log:
        log(REFERENCE_RUN),
    benchmark:
        benchmark(REFERENCE_RUN)
