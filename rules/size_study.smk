# Model-size study: a pixel or latent DDPM teacher trained from scratch when the teacher is
# 'ddpm:teacher' (train_ddpm); the teacher's U-Net distilled into students of several width factors (task +
# output-KD loss), each a model w<factor> sampled and evaluated like every other model (rule
# generate, metrics, efficiency); then the size analyses, each a named target writing Parquet
# and its figures: timestep_mse (size x timestep heatmap), trajectory (divergence and denoising
# grid), size_latency (interleaved U-Net step latency and FLOPs), size_study_summary (cost and quality
# against size, the efficiency frontier). All of it: the
# target size_study. Its plan: kd_core.studies.size_study.

SIZE = PLAN.study("size_study")


localrules:
    figure_size_study,
    size_study,


rule train_ddpm:
    input:
        vae=PLAN.built_input(PLAN.config["ddpm_teacher"]["vae"]),
    output:
        model=directory(f"{OUT}/models/ddpm_teacher"),
        loss=f"{OUT}/train/ddpm_teacher/loss.parquet",
    params:
        data=PLAN.ddpm_data,
        vae=PLAN.ddpm_vae,
        ddpm=PLAN.ddpm_params,
        seed=config["seed"],
        code=adapter_code("train_ddpm"),
    log:
        f"{OUT}/logs/train_ddpm.log",
    benchmark:
        f"{OUT}/benchmarks/train_ddpm.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=32000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/train_ddpm.py"


rule train_width_student:
    input:
        **(SIZE.inputs() if SIZE.enabled else {}),
    output:
        model=directory(f"{OUT}/models/{{width_student}}"),
        loss=f"{OUT}/train/{{width_student}}/loss.parquet",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        data=lambda wildcards: SIZE.training_data(),
        size=SIZE.train_params(),
        factor=lambda wildcards: SIZE.factor(wildcards.width_student),
        init=lambda wildcards: SIZE.init(wildcards.width_student),
        seed=config["seed"],
        code=adapter_code("train_width_student"),
    log:
        f"{OUT}/logs/train_width_student_{{width_student}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_width_student_{{width_student}}.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=32000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/train_width_student.py"


rule timestep_mse:
    input:
        **(SIZE.analysis_inputs() if SIZE.enabled else {}),
    output:
        f"{OUT}/metrics/timestep_mse.parquet",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        students=SIZE.student_dirs(),
        factors=SIZE.factors,
        settings=SIZE.cfg["timestep_mse"],
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("timestep_mse"),
    log:
        f"{OUT}/logs/timestep_mse.log",
    benchmark:
        f"{OUT}/benchmarks/timestep_mse.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/timestep_mse.py"


rule size_latency:
    input:
        **(SIZE.model_inputs() if SIZE.enabled else {}),
    output:
        f"{OUT}/metrics/size_latency.parquet",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        students=SIZE.student_dirs(),
        factors=SIZE.factors,
        settings=SIZE.cfg["latency"],
        guidance=config["models"]["teacher"]["generation"]["guidance_scale"],
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("denoiser_latency"),
    log:
        f"{OUT}/logs/size_latency.log",
    benchmark:
        f"{OUT}/benchmarks/size_latency.tsv"
    threads: workflow.cores  # alone on the machine: nothing else runs while it times
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/denoiser_latency.py"


rule trajectory:
    input:
        **(SIZE.analysis_inputs() if SIZE.enabled else {}),
    output:
        table=f"{OUT}/metrics/trajectory.parquet",
        images=f"{OUT}/metrics/trajectory_x0.safetensors",
    params:
        teacher=lambda wildcards: PLAN.teacher_source,
        students=SIZE.student_dirs(),
        factors=SIZE.factors,
        settings=SIZE.cfg["trajectory"],
        bootstrap=PLAN.metrics["bootstrap"],
        seed=config["seed"],
        code=adapter_code("trajectory"),
    log:
        f"{OUT}/logs/trajectory.log",
    benchmark:
        f"{OUT}/benchmarks/trajectory.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=16000,
        gpu=1,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/trajectory.py"


rule size_study_summary:
    input:
        **SIZE.summary_inputs(),
    output:
        f"{OUT}/metrics/size_study.parquet",
    params:
        factors=SIZE.factors,
        init=config["size_study"]["init"],
        bootstrap=config["metrics"]["bootstrap"],
        seed=config["seed"],
        code=adapter_code("size_study_summary"),
    log:
        f"{OUT}/logs/size_study_summary.log",
    benchmark:
        f"{OUT}/benchmarks/size_study_summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/size_study_summary.py"


rule figure_size_study:
    input:
        timestep=rules.timestep_mse.output[0],
        trajectory=rules.trajectory.output.table,
        images=rules.trajectory.output.images,
        summary=rules.size_study_summary.output[0],
    output:
        heatmap=report(f"{OUT}/figures/size_heatmap.png", caption="../report/size_study.rst", category="Model size"),
        heatmap_pdf=f"{OUT}/figures/size_heatmap.pdf",
        trajectory=report(f"{OUT}/figures/size_trajectory.png", caption="../report/size_study.rst", category="Model size"),
        trajectory_pdf=f"{OUT}/figures/size_trajectory.pdf",
        denoising=report(f"{OUT}/figures/size_denoising.png", caption="../report/size_study.rst", category="Model size"),
        denoising_pdf=f"{OUT}/figures/size_denoising.pdf",
        cost=report(f"{OUT}/figures/size_cost.png", caption="../report/size_study.rst", category="Model size"),
        cost_pdf=f"{OUT}/figures/size_cost.pdf",
        quality=report(f"{OUT}/figures/size_quality.png", caption="../report/size_study.rst", category="Model size"),
        quality_pdf=f"{OUT}/figures/size_quality.pdf",
    params:
        code=adapter_code("figure_size_study"),
    log:
        f"{OUT}/logs/figure_size_study.log",
    benchmark:
        f"{OUT}/benchmarks/figure_size_study.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_size_study.py"


rule size_study:
    input:
        SIZE.figure_files(),
        f"{OUT}/metrics/size_study.parquet",
