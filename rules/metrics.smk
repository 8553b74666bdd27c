# Metric tables in Parquet. Shapes world: per-attribute prompt alignment read by the classifier.


rule attribute_accuracy:
    input:
        manifest=f"{OUT}/images/{{model}}/manifest.parquet",
        classifier=rules.world_classifier.output.model,
    output:
        f"{OUT}/metrics/attributes/{{model}}.parquet",
    params:
        code=code_hash("kd_core.world.classifier"),
    log:
        f"{OUT}/logs/attribute_accuracy_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/attribute_accuracy_{{model}}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/attribute_accuracy.py"


rule attribute_summary:
    input:
        expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=MODELS),
    output:
        f"{OUT}/metrics/attribute_accuracy.parquet",
    params:
        seed=config["seed"],
        code=code_hash("kd_core.world.classifier"),
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


rule pairwise:
    input:
        manifest=f"{OUT}/images/{{model}}/manifest.parquet",
        reference=f"{OUT}/images/teacher/manifest.parquet",
    output:
        f"{OUT}/metrics/pairwise/{{model}}.parquet",
    params:
        code=code_hash("kd_core.metrics.pairwise"),
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
        "../workflow_scripts/pairwise.py"


rule improvement:
    input:
        pairwise=expand(f"{OUT}/metrics/pairwise/{{model}}.parquet", model=STUDENTS),
        attributes=expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=STUDENTS) if WORLD else [],
    output:
        f"{OUT}/metrics/improvement.parquet",
    params:
        baseline="base_student",
        seed=config["seed"],
        code=code_hash("kd_core.metrics.stats"),
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
