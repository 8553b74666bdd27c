# Metric tables in Parquet (results/<experiment>/metrics/): pairwise image metrics against the
# teacher, FID/KID, CLIP score, per-attribute accuracy (shapes world), efficiency, and the
# statistics (summary with bootstrap CIs; paired improvement over the base student).


# One job for every model: a few seconds of classifier work each, against ~10 s of start-up per job.
rule attribute_accuracy:
    input:
        manifests=PLAN.manifests(),
        classifier=rules.world_classifier.output.model,
    output:
        expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=PLAN.models),
    params:
        models=PLAN.models,
        code=adapter_code("attribute_accuracy"),
    log:
        f"{OUT}/logs/attribute_accuracy.log",
    benchmark:
        f"{OUT}/benchmarks/attribute_accuracy.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/attribute_accuracy.py"


rule attribute_summary:
    input:
        expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=PLAN.models),
    output:
        f"{OUT}/metrics/attribute_accuracy.parquet",
    params:
        seed=config["seed"],
        bootstrap=PLAN.metrics["bootstrap"],
        code=adapter_code("attribute_summary"),
    log:
        f"{OUT}/logs/attribute_summary.log",
    benchmark:
        f"{OUT}/benchmarks/attribute_summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/attribute_summary.py"


# shards.metrics = N > 1: N pairwise_shard jobs per student, each a contiguous slice of its image
# pairs; pairwise gathers them into the same per-student table.
rule pairwise_shard:
    input:
        manifest=f"{OUT}/images/{{model}}/eval.parquet",
        reference=f"{OUT}/images/teacher/eval.parquet",
    output:
        f"{OUT}/metrics/pairwise/{{model}}/{{shard}}.parquet",
    params:
        code=adapter_code("pairwise"),
    log:
        f"{OUT}/logs/pairwise_{{model}}_{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/pairwise_{{model}}_{{shard}}.tsv"
    threads: PLAN.metrics["workers"]
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/pairwise.py"


if len(PLAN.metric_shards) == 1:

    use rule pairwise_shard as pairwise with:
        output:
            f"{OUT}/metrics/pairwise/{{model}}.parquet",
        log:
            f"{OUT}/logs/pairwise_{{model}}.log",
        benchmark:
            f"{OUT}/benchmarks/pairwise_{{model}}.tsv"

else:

    localrules:
        pairwise,

    rule pairwise:
        input:
            expand(f"{OUT}/metrics/pairwise/{{{{model}}}}/{{shard}}.parquet", shard=PLAN.metric_shards),
        output:
            f"{OUT}/metrics/pairwise/{{model}}.parquet",
        params:
            code=adapter_code("pairwise_gather"),
        log:
            f"{OUT}/logs/pairwise_{{model}}.log",
        benchmark:
            f"{OUT}/benchmarks/pairwise_{{model}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            "../envs/kd_core.yaml"
        script:
            "../workflow_scripts/pairwise_gather.py"


rule pairwise_gather:
    input:
        expand(f"{OUT}/metrics/pairwise/{{model}}.parquet", model=PLAN.students),
    output:
        f"{OUT}/metrics/pairwise.parquet",
    params:
        code=adapter_code("pairwise_gather"),
    log:
        f"{OUT}/logs/pairwise_gather.log",
    benchmark:
        f"{OUT}/benchmarks/pairwise_gather.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/pairwise_gather.py"


rule distribution:
    input:
        **PLAN.distribution_inputs(),
    output:
        f"{OUT}/metrics/distribution.parquet",
    params:
        models=PLAN.models,
        features=PLAN.metrics["features"],
        model=lambda wildcards: PLAN.feature_model,
        device=PLAN.metrics["device"],
        seed=config["seed"],
        code=adapter_code("distribution"),
    log:
        f"{OUT}/logs/distribution.log",
    benchmark:
        f"{OUT}/benchmarks/distribution.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/distribution.py"


rule alignment:
    input:
        manifest=f"{OUT}/images/{{model}}/eval.parquet",
        clip=PLAN.built_input(PLAN.clip),
    output:
        f"{OUT}/metrics/alignment/{{model}}.parquet",
    params:
        clip=PLAN.model_dir(PLAN.clip) if PLAN.clip else None,
        device=PLAN.metrics["device"],
        code=adapter_code("alignment"),
    log:
        f"{OUT}/logs/alignment_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/alignment_{{model}}.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/alignment.py"


rule alignment_gather:
    input:
        expand(f"{OUT}/metrics/alignment/{{model}}.parquet", model=PLAN.models),
    output:
        f"{OUT}/metrics/alignment.parquet",
    params:
        code=adapter_code("alignment_gather"),
    log:
        f"{OUT}/logs/alignment_gather.log",
    benchmark:
        f"{OUT}/benchmarks/alignment_gather.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/alignment_gather.py"


rule efficiency:
    input:
        **PLAN.efficiency_inputs(),
    output:
        f"{OUT}/metrics/efficiency.parquet",
    params:
        models=PLAN.efficiency_models(),
        efficiency=PLAN.metrics["efficiency"],
        code=adapter_code("efficiency"),
    log:
        f"{OUT}/logs/efficiency.log",
    benchmark:
        f"{OUT}/benchmarks/efficiency.tsv"
    # all cores: timings must not share the machine with other jobs
    threads: workflow.cores
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/efficiency.py"


rule summary:
    input:
        pairwise=f"{OUT}/metrics/pairwise.parquet",
        attributes=expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=PLAN.models) if PLAN.world else [],
        alignment=f"{OUT}/metrics/alignment.parquet" if PLAN.clip else [],
    output:
        f"{OUT}/metrics/summary.parquet",
    params:
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("summary"),
    log:
        f"{OUT}/logs/summary.log",
    benchmark:
        f"{OUT}/benchmarks/summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/summary.py"


rule improvement:
    input:
        pairwise=f"{OUT}/metrics/pairwise.parquet",
        attributes=expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=PLAN.students) if PLAN.world else [],
        alignment=f"{OUT}/metrics/alignment.parquet" if PLAN.clip else [],
    output:
        f"{OUT}/metrics/improvement.parquet",
    params:
        baseline="base_student",
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("improvement"),
    log:
        f"{OUT}/logs/improvement.log",
    benchmark:
        f"{OUT}/benchmarks/improvement.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/improvement.py"
