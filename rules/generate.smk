# Teacher and student sampling: one PNG per (prompt_id, seed) plus manifest.parquet per model.


rule generate:
    input:
        unpack(generate_input),
    output:
        manifest=f"{OUT}/images/{{model}}/manifest.parquet",
    params:
        source=generate_source,
        generation=generate_config,
        code=code_hash("kd_core.generate"),
    log:
        f"{OUT}/logs/generate_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/generate_{{model}}.tsv"
    threads: 8
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/generate.py"
