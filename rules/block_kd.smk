# BK-SDM block distillation: the teacher's U-Net distilled into block-removed students (task +
# output-KD + feature-KD losses), each then sampled like every other model (rule generate); its
# table: quality against the teacher, the base student and the ablation, beside size and step
# latency (block_kd_latency, block_kd_summary). Its plan: kd_core.studies.block_kd.

BLOCK_KD = PLAN.study("block_kd")


rule train_block_kd:
    input:
        **(BLOCK_KD.inputs() if BLOCK_KD.enabled else {}),
    output:
        model=directory(f"{OUT}/models/{{bk}}"),
        loss=f"{OUT}/train/{{bk}}/loss.parquet",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        data=lambda wildcards: BLOCK_KD.training_data(),
        block_kd=BLOCK_KD.train_params(),
        settings=lambda wildcards: BLOCK_KD.settings(wildcards.bk),
        seed=config["seed"],
        code=adapter_code("train_block_kd"),
    log:
        f"{OUT}/logs/train_block_kd_{{bk}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_block_kd_{{bk}}.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=32000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/train_block_kd.py"


rule block_kd_latency:
    input:
        **(BLOCK_KD.latency_inputs() if BLOCK_KD.enabled else {}),
    output:
        f"{OUT}/metrics/block_kd_latency.parquet",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        students=BLOCK_KD.latency_students() if BLOCK_KD.enabled else {},
        factors={},
        settings=BLOCK_KD.cfg["latency"],
        guidance=config["models"]["teacher"]["generation"]["guidance_scale"],
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("denoiser_latency"),
    log:
        f"{OUT}/logs/block_kd_latency.log",
    benchmark:
        f"{OUT}/benchmarks/block_kd_latency.tsv"
    threads: workflow.cores  # alone on the machine: nothing else runs while it times
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/denoiser_latency.py"


rule block_kd_summary:
    input:
        **(BLOCK_KD.summary_inputs() if BLOCK_KD.enabled else {}),
    output:
        f"{OUT}/metrics/block_kd.parquet",
    params:
        students=BLOCK_KD.students if BLOCK_KD.enabled else {},
        base="base_student" if "base_student" in PLAN.models else None,
        bootstrap=config["metrics"]["bootstrap"],
        seed=config["seed"],
        code=adapter_code("block_kd_summary"),
    log:
        f"{OUT}/logs/block_kd_summary.log",
    benchmark:
        f"{OUT}/benchmarks/block_kd_summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/block_kd_summary.py"
