# Prompt synthesis: train / eval / filler splits from grammars kept as data, one job per split
# whose params are only the settings that split depends on (more eval prompts keep train.parquet,
# and so the teacher's train images and every training, as they are).


rule prompts:
    output:
        f"{OUT}/prompts/{{split}}.parquet",
    params:
        prompts=prompt_params,
        code=adapter_code("prompts"),
    log:
        f"{OUT}/logs/prompts_{{split}}.log",
    benchmark:
        f"{OUT}/benchmarks/prompts_{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/prompts.py"
