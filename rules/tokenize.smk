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
