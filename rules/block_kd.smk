# BK-SDM block distillation: the teacher's U-Net distilled into block-removed students (task +
# output-KD + feature-KD losses), each then sampled like every other model (rule generate).


rule train_block_kd:
    input:
        **PLAN.block_kd_inputs(),
    output:
        model=directory(f"{OUT}/models/{{bk}}"),
        loss=f"{OUT}/train/{{bk}}/loss.parquet",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        data=lambda wildcards: PLAN.training_data("block_kd"),
        block_kd=PLAN.train_params("block_kd"),
        settings=block_kd_settings,
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
