# Step distillation: a few-step student of the teacher by latent consistency distillation
# (LCM-LoRA or a full LCM U-Net), then sampled at each of step_distill.steps with LCMScheduler
# beside the teacher at the same step counts (rule generate, models <method>_s<n> and
# <teacher>_s<n>), every one evaluated like every other model. Its plan:
# kd_core.studies.step_distill.

STEP = PLAN.study("step_distill")


rule train_step_distill:
    input:
        **(STEP.inputs() if STEP.enabled else {}),
    output:
        model=directory(f"{OUT}/models/{STEP.method}"),
        loss=f"{OUT}/train/{STEP.method}/loss.parquet",
    params:
        teacher=lambda wildcards: STEP.teacher_source,
        data=lambda wildcards: STEP.training_data(),
        step_distill=STEP.train_params(),
        seed=config["seed"],
        code=adapter_code("train_step_distill"),
    log:
        f"{OUT}/logs/train_step_distill.log",
    benchmark:
        f"{OUT}/benchmarks/train_step_distill.tsv"
    # the student's eight sampling jobs, the latency and the study's table wait for it: first in line
    # when the teacher's images are there (the demo's critical path ran through it, 188 s waiting)
    priority: 1
    threads: MODEL_THREADS
    resources:
        mem_mb=32000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/train_step_distill.py"


rule step_latency:
    input:
        **STEP.latency_inputs() if STEP.enabled else {},
    output:
        f"{OUT}/metrics/step_latency.parquet",
    params:
        models=lambda wildcards: STEP.latency_models(),
        reference=STEP.teacher_name,
        settings=STEP.cfg["latency"],
        seed=config["seed"],
        code=adapter_code("step_latency"),
    log:
        f"{OUT}/logs/step_latency.log",
    benchmark:
        f"{OUT}/benchmarks/step_latency.tsv"
    threads: workflow.cores  # alone on the machine: nothing else runs while it times
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/step_latency.py"


rule step_distill_summary:
    input:
        **STEP.summary_inputs() if STEP.enabled else {},
    output:
        f"{OUT}/metrics/step_distill.parquet",
    params:
        students=STEP.students if STEP.enabled else {},
        teachers=STEP.teachers if STEP.enabled else {},
        teacher=STEP.teacher_name,
        full_steps=lambda wildcards: STEP.full_steps,
        bootstrap=config["metrics"]["bootstrap"],
        seed=config["seed"],
        code=adapter_code("step_distill_summary"),
    log:
        f"{OUT}/logs/step_distill_summary.log",
    benchmark:
        f"{OUT}/benchmarks/step_distill_summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/step_distill_summary.py"


rule figure_step_distill:
    input:
        rules.step_distill_summary.output[0],
    output:
        steps=report(f"{OUT}/figures/step_distill_steps.png", caption="../report/step_distill.rst", category="Step distillation"),
        steps_pdf=f"{OUT}/figures/step_distill_steps.pdf",
        latency=report(f"{OUT}/figures/step_distill_latency.png", caption="../report/step_distill.rst", category="Step distillation"),
        latency_pdf=f"{OUT}/figures/step_distill_latency.pdf",
    params:
        full_steps=lambda wildcards: STEP.full_steps,
        code=adapter_code("figure_step_distill"),
    log:
        f"{OUT}/logs/figure_step_distill.log",
    benchmark:
        f"{OUT}/benchmarks/figure_step_distill.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_step_distill.py"


localrules:
    step_distill,


rule step_distill:
    input:
        f"{OUT}/metrics/step_distill.parquet",
        [f"{OUT}/figures/{f}.{ext}" for f in STEP.figures() for ext in ("png", "pdf")],
