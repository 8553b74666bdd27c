# The offline shapes world: rendered "real" data, attribute classifier, toy models; and the tiny
# random-weight SD / SDXL pipelines that exercise the real-model code paths.


# One job per split (train.parquet + train/, test.parquet + test/): more test images leave the
# train images, and the toy models trained on them, as they are.
rule world_data:
    output:
        table=f"{OUT}/data/world/{{world_split}}.parquet",
    params:
        world=lambda wildcards: PLAN.world_data_params(wildcards.world_split),
        grammar=config["prompts"]["grammar"],
        seed=config["seed"],
        code=adapter_code("world_data"),
    log:
        f"{OUT}/logs/world_data_{{world_split}}.log",
    benchmark:
        f"{OUT}/benchmarks/world_data_{{world_split}}.tsv"
    wildcard_constraints:
        world_split="train|test",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/world_data.py"


rule world_classifier:
    input:
        train=PLAN.world_table("train"),
        test=PLAN.world_table("test"),
    output:
        model=f"{OUT}/models/classifier/model.safetensors",
        config=f"{OUT}/models/classifier/config.json",
        accuracy=f"{OUT}/models/classifier/heldout_accuracy.parquet",
    params:
        classifier=PLAN.classifier_params,
        image_size=config["world"]["image_size"],
        seed=config["seed"],
        code=adapter_code("world_classifier"),
    log:
        f"{OUT}/logs/world_classifier.log",
    benchmark:
        f"{OUT}/benchmarks/world_classifier.tsv"
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/world_classifier.py"


# The toy models in two steps: the VAE, text encoder and the train split's encodings, then the
# teacher and base-student U-Nets on them, side by side. The teacher is on the critical path of
# every study: it goes first.
rule toy_base:
    input:
        table=PLAN.world_table("train"),
    output:
        model=directory(f"{OUT}/models/toy_base"),
        loss=f"{OUT}/train/toy/vae/loss.parquet",
    params:
        toy={k: config["world"]["toy"][k] for k in ("vae", "text")},  # not the U-Nets': toy_unet's params
        grammars=[config["prompts"]["grammar"], config["prompts"]["filler_grammar"]],
        seed=config["seed"],
        code=adapter_code("toy_base"),
    log:
        f"{OUT}/logs/toy_base.log",
    benchmark:
        f"{OUT}/benchmarks/toy_base.tsv"
    priority: 2
    threads: BASE_THREADS
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/toy_base.py"


rule toy_unet:
    input:
        base=rules.toy_base.output.model,
    output:
        model=directory(f"{OUT}/models/toy_{{role}}"),
        loss=f"{OUT}/train/toy/{{role}}/loss.parquet",
    params:
        unet=lambda wildcards: config["world"]["toy"][wildcards.role],
        seed=config["seed"],
        code=adapter_code("toy_unet"),
    log:
        f"{OUT}/logs/toy_unet_{{role}}.log",
    benchmark:
        f"{OUT}/benchmarks/toy_unet_{{role}}.tsv"
    wildcard_constraints:
        role="teacher|student",
    priority: 1
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/toy_unet.py"


# The SDXL-style teacher (toy:teacher_xl): on the toy base's VAE, tokenizer and latents, with a
# second text encoder of its own; it reads the train table for the prompts that encoder encodes.
rule toy_teacher_xl:
    input:
        base=rules.toy_base.output.model,
        table=PLAN.world_table("train"),
    output:
        model=directory(f"{OUT}/models/toy_teacher_xl"),
        loss=f"{OUT}/train/toy/teacher_xl/loss.parquet",
    params:
        unet=config["world"]["toy"]["teacher_xl"],
        text_2=config["world"]["toy"]["text_2"],
        seed=config["seed"],
        code=adapter_code("toy_teacher_xl"),
    log:
        f"{OUT}/logs/toy_teacher_xl.log",
    benchmark:
        f"{OUT}/benchmarks/toy_teacher_xl.tsv"
    priority: 1
    threads: MODEL_THREADS
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/toy_teacher_xl.py"


rule tiny_model:
    output:
        directory(f"{OUT}/models/tiny_{{kind}}"),
    params:
        seed=config["seed"],
        code=adapter_code("tiny_model"),
    log:
        f"{OUT}/logs/tiny_model_{{kind}}.log",
    benchmark:
        f"{OUT}/benchmarks/tiny_model_{{kind}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/tiny_model.py"
