# Prompt synthesis: train / eval / filler splits from grammars kept as data.


rule prompts:
    output:
        train=f"{OUT}/prompts/train.parquet",
        eval=f"{OUT}/prompts/eval.parquet",
        filler=f"{OUT}/prompts/filler.parquet",
    params:
        prompts=config["prompts"],
        seed=config["seed"],
        code=adapter_code("prompts"),
    log:
        f"{OUT}/logs/prompts.log",
    benchmark:
        f"{OUT}/benchmarks/prompts.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/prompts.py"
