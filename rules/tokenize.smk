# Tokenize each dataset once per tokenizer; every subset and fine-tuning run reads the same memory-mapped copy.


rule tokenize:
    input:
        data=rules.download_dataset.output[0],
        model=rules.download_model.output[0],
    output:
        directory(TOKENIZED),
    params:
        task=tokenize_params,
        max_length=EXP.config["max_length"],
        doc_stride=EXP.config["doc_stride"],
    conda:
        "../envs/prefinetune.yaml"
    log:
        f"logs/tokenize/{MODEL}/{{task}}.log",
    benchmark:
        f"benchmarks/tokenize/{MODEL}/{{task}}.tsv"
    threads: 1
    script:
        "../workflow_scripts/tokenize.py"


# A reference model's targets, tokenized with its own tokenizer (results/tokenized/<its name>/<task>): a published
# checkpoint may tokenize differently from the main model, and the paths never meet.
use rule tokenize as tokenize_reference with:
    input:
        data=rules.download_dataset.output[0],
        model=rules.download_reference.output[0],
    output:
        directory(REFERENCE_TOKENIZED),
    log:
        "logs/tokenize/{reference}/{task}.log",
    benchmark:
        "benchmarks/tokenize/{reference}/{task}.tsv"
