# Teacher and student sampling: one PNG per (prompt_id, seed) in images/<model>/, and one manifest
# per prompt split, images/<model>/<split>.parquet, each its own job: the studies train on the
# teacher's train split, the metrics read the eval split, the grids eval and filler, so an edit to
# one split reruns only its readers. With shards.images = N > 1, N generate_shard jobs per model
# and split each make a batch-aligned slice of the prompts (images/<model>/shards/<split>-<i>-of-<N>.parquet)
# and generate gathers their manifests; with one shard, generate is generate_shard writing the manifest itself.


rule generate_shard:
    input:
        unpack(generate_input),
    output:
        manifest=f"{OUT}/images/{{model}}/shards/{{split}}-{{shard}}.parquet",
    params:
        source=generate_source,
        generation=generate_config,
        runtime=generate_runtime,
        code=adapter_code("generate"),
    log:
        f"{OUT}/logs/generate_{{model}}_{{split}}_{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/generate_{{model}}_{{split}}_{{shard}}.tsv"
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
            manifest=f"{OUT}/images/{{model}}/{{split}}.parquet",
        log:
            f"{OUT}/logs/generate_{{model}}_{{split}}.log",
        benchmark:
            f"{OUT}/benchmarks/generate_{{model}}_{{split}}.tsv"

else:

    localrules:
        generate,

    rule generate:
        input:
            unpack(generate_gather_input),
        output:
            manifest=f"{OUT}/images/{{model}}/{{split}}.parquet",
        params:
            code=adapter_code("generate_gather"),
        log:
            f"{OUT}/logs/generate_{{model}}_{{split}}.log",
        benchmark:
            f"{OUT}/benchmarks/generate_{{model}}_{{split}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            "../envs/kd_core.yaml"
        script:
            "../workflow_scripts/generate_gather.py"
