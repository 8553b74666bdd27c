# BK-SDM block distillation: the teacher's U-Net distilled into block-removed students (task +
# output-KD + feature-KD losses), each then sampled like every other model (rule generate). Its
# plan: kd_core.studies.block_kd.

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
