# DM-KD: a classifier teacher trained on real images teaches randomly initialised students only on
# images the diffusion teacher generates from class prompts (one set per guidance scale); the
# baselines are a student on the real images and students on the synthetic images with hard
# labels. Every student run is trained once per seed (dmkd.seeds); every classifier is scored
# on the real test split, and the summary pools the seeds (metrics/dmkd.parquet). Its plan:
# kd_core.studies.dmkd.

DMKD = PLAN.study("dmkd")


rule dmkd_prompts:
    output:
        f"{OUT}/dmkd/prompts.parquet",
    params:
        dmkd=DMKD.prompt_settings,
        grammar=config["prompts"]["grammar"],
        seed=config["seed"],
        code=adapter_code("dmkd_prompts"),
    log:
        f"{OUT}/logs/dmkd_prompts.log",
    benchmark:
        f"{OUT}/benchmarks/dmkd_prompts.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/dmkd_prompts.py"


rule dmkd_generate:
    input:
        prompts=rules.dmkd_prompts.output[0],
        model=PLAN.built_input(PLAN.teacher["source"]),
    output:
        manifest=f"{OUT}/dmkd/synthetic/{{dmkd_set}}/manifest.parquet",
    params:
        source=lambda wildcards: PLAN.teacher_source,
        generation=lambda wildcards: DMKD.generation(wildcards.dmkd_set),
        runtime=Runtime(DMKD.generation_runtime()),
        code=adapter_code("dmkd_generate"),
    log:
        f"{OUT}/logs/dmkd_generate_{{dmkd_set}}.log",
    benchmark:
        f"{OUT}/benchmarks/dmkd_generate_{{dmkd_set}}.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/dmkd_generate.py"


rule dmkd_teacher:
    input:
        real=DMKD.real_inputs(),
    output:
        model=directory(f"{OUT}/models/dmkd_teacher"),
        loss=f"{OUT}/train/dmkd_teacher/loss.parquet",
        predictions=f"{OUT}/metrics/dmkd/teacher.parquet",
    params:
        real=lambda wildcards: DMKD.real,
        dmkd=DMKD.teacher_settings,
        grammar=config["prompts"]["grammar"],
        seed=config["seed"],
        code=adapter_code("dmkd_train"),
    log:
        f"{OUT}/logs/dmkd_teacher.log",
    benchmark:
        f"{OUT}/benchmarks/dmkd_teacher.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/dmkd_train.py"


use rule dmkd_teacher as dmkd_student with:
    input:
        unpack(lambda wildcards: DMKD.student_inputs(wildcards.dmkd_run)),
    output:
        model=directory(f"{OUT}/models/dmkd_{{dmkd_run}}"),
        loss=f"{OUT}/train/dmkd_{{dmkd_run}}/loss.parquet",
        predictions=f"{OUT}/metrics/dmkd/{{dmkd_run}}.parquet",
    params:
        real=lambda wildcards: DMKD.real,
        data=lambda wildcards: DMKD.data(wildcards.dmkd_run),
        run=lambda wildcards: DMKD.job(wildcards.dmkd_run),
        dmkd=DMKD.student_settings,
        grammar=config["prompts"]["grammar"],
        code=adapter_code("dmkd_train"),
    log:
        f"{OUT}/logs/dmkd_student_{{dmkd_run}}.log",
    benchmark:
        f"{OUT}/benchmarks/dmkd_student_{{dmkd_run}}.tsv"


rule dmkd_summary:
    input:
        teacher=rules.dmkd_teacher.output.predictions,
        runs=expand(f"{OUT}/metrics/dmkd/{{dmkd_run}}.parquet", dmkd_run=DMKD.jobs if DMKD.enabled else []),
    output:
        f"{OUT}/metrics/dmkd.parquet",
    params:
        runs=DMKD.runs if DMKD.enabled else {},
        jobs=DMKD.jobs if DMKD.enabled else {},
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("dmkd_summary"),
    log:
        f"{OUT}/logs/dmkd_summary.log",
    benchmark:
        f"{OUT}/benchmarks/dmkd_summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/dmkd_summary.py"


rule figure_dmkd:
    input:
        table=rules.dmkd_summary.output[0],
        losses=list(DMKD.curves().values()) if DMKD.enabled else [],
    output:
        accuracy=report(f"{OUT}/figures/dmkd_accuracy.png", caption="../report/dmkd_accuracy.rst", category="DM-KD"),
        accuracy_pdf=f"{OUT}/figures/dmkd_accuracy.pdf",
        curves=report(f"{OUT}/figures/dmkd_curves.png", caption="../report/dmkd_curves.rst", category="DM-KD"),
        curves_pdf=f"{OUT}/figures/dmkd_curves.pdf",
    params:
        runs=list(DMKD.curves()) if DMKD.enabled else [],
        code=adapter_code("figure_dmkd"),
    log:
        f"{OUT}/logs/figure_dmkd.log",
    benchmark:
        f"{OUT}/benchmarks/figure_dmkd.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_dmkd.py"
