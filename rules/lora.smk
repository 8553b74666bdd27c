# LoRA knowledge transfer: a student LoRA-tuned on the teacher's images (or a caption dataset),
# then sampled like every other model (rule generate, model 'lora_student'). Its plan:
# kd_core.studies.lora.

LORA = PLAN.study("lora")


rule train_lora:
    input:
        **(LORA.inputs() if LORA.enabled else {}),
    output:
        adapter=directory(f"{OUT}/models/lora_student"),
        loss=f"{OUT}/train/lora/loss.parquet",
    params:
        student=lambda wildcards: LORA.student_source,
        data=lambda wildcards: LORA.training_data(),
        lora=LORA.train_params(),
        seed=config["seed"],
        code=adapter_code("train_lora"),
    log:
        f"{OUT}/logs/train_lora.log",
    benchmark:
        f"{OUT}/benchmarks/train_lora.tsv"
    # the longest job that waits for the teacher's images, and the LoRA student's metrics wait for
    # it: first in line when they are there
    priority: 1
    threads: MODEL_THREADS
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/train_lora.py"
