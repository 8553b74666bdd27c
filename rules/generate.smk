# Teacher and student sampling: one PNG per (prompt_id, seed) plus manifest.parquet per model.
# With shards.images = N > 1, N generate_shard jobs per model each make a batch-aligned slice of
# the prompts (images/<model>/shards/<i>-of-<N>.parquet) and generate gathers their manifests;
# with one shard, generate is generate_shard writing the manifest itself.


rule generate_shard:
    input:
        unpack(generate_input),
    output:
        manifest=f"{OUT}/images/{{model}}/shards/{{shard}}.parquet",
    params:
        source=generate_source,
        generation=generate_config,
        code=adapter_code("generate"),
    log:
        f"{OUT}/logs/generate_{{model}}_{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/generate_{{model}}_{{shard}}.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/generate.py"


if len(PLAN.image_shards) == 1:

    use rule generate_shard as generate with:
        output:
            manifest=f"{OUT}/images/{{model}}/manifest.parquet",
        log:
            f"{OUT}/logs/generate_{{model}}.log",
        benchmark:
            f"{OUT}/benchmarks/generate_{{model}}.tsv"

else:

    localrules:
        generate,

    rule generate:
        input:
            unpack(generate_gather_input),
        output:
            manifest=f"{OUT}/images/{{model}}/manifest.parquet",
        params:
            code=adapter_code("generate_gather"),
        log:
            f"{OUT}/logs/generate_{{model}}.log",
        benchmark:
            f"{OUT}/benchmarks/generate_{{model}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            "../envs/kd_core.yaml"
        script:
            "../workflow_scripts/generate_gather.py"
