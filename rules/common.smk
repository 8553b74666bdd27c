# Config validation, output paths, input functions, wildcard constraints and code hashes.

import sys
from pathlib import Path

from kd_core.devices import visible_devices
from kd_core.errors import KDError
from kd_core.experiment import validate_experiment
from kd_core.provenance import code_hash
from kd_core.shards import shard_names
from kd_core.sources import BUILT, is_built, local_path

try:
    _validated = validate_experiment(config, Path(workflow.basedir) / "config" / "schema.yaml")
except KDError as _exc:
    sys.stderr.write(f"config error: {_exc}\n")
    sys.exit(1)
config.clear()
config.update(_validated)

OUT = f"results/{config['experiment']}"


def _cpu_only_cores():
    """The core count of a local run on a machine without GPUs, else None (GPUs, or a cluster run
    with no core count given: a cluster job evaluates this again on its node)."""
    cores = workflow.global_resources.get("_cores")
    cores = getattr(cores, "value", cores)
    return None if visible_devices() or not isinstance(cores, int) else cores


def _model_threads():
    """Threads of a job that trains, samples or embeds with a model: 8 where GPUs are (data loading,
    PNG encoding) or no core count is given (a cluster run); on a CPU-only machine half its cores, so
    that two such jobs run side by side. Small models use a second thread poorly: two 1-thread
    toy-teacher training steps side by side do 1.85x the work of one 2-thread step on 2 cores
    (6.95 vs 3.76 it/s). A cluster job evaluates this again on its node, with the cores it was given:
    never more than it asked for."""
    cores = _cpu_only_cores()
    return 8 if cores is None else max(1, cores // 2)


MODEL_THREADS = _model_threads()
# toy_base: every core of a CPU-only machine. It is the first model job and nothing runs beside it
# (both toy U-Nets wait for it), and the VAE's 32 px convolutions use a second thread well (1.4x
# at 2 threads, where the toy U-Nets gain nothing).
BASE_THREADS = _cpu_only_cores() or MODEL_THREADS
LORA = config["lora"]["enabled"]
BK = config["block_kd"]
BK_MODELS = (BK["levels"] + ([f"{lv}_nofeat" for lv in BK["levels"]] if BK["ablate_features"] else [])) if BK["enabled"] else []
SIZE = config["size_study"]
# width students of the model-size study: model name -> width factor (w0p25 -> 0.25; as
# kd_core.train.size_kd.student_name, written here so that parsing the workflow imports no torch)
SIZE_FACTORS = {f"w{f:g}".replace(".", "p"): f for f in sorted(SIZE["factors"])} if SIZE["enabled"] else {}
# what a width student's training depends on (not the list of factors, not the analyses' settings)
SIZE_TRAIN = {k: v for k, v in SIZE.items() if k not in ("enabled", "factors", "timestep_mse", "trajectory")}
SIZE_MODELS = list(SIZE_FACTORS)
MODELS = list(config["models"]) + (["lora_student"] if LORA else []) + BK_MODELS + SIZE_MODELS
STUDENTS = [m for m in MODELS if m != "teacher"]
WORLD = config["world"]["enabled"]
METRICS = config["metrics"]
EXTRACTOR = METRICS["features"]["extractor"]
CLIP = METRICS["clip_model"]
EFFICIENCY = METRICS["efficiency"]["enabled"]
DMKD = config["classifier_kd"]
IMAGE_SHARDS = shard_names(config["shards"]["images"])  # generation jobs per model
METRIC_SHARDS = shard_names(config["shards"]["metrics"])  # pairwise-metric jobs per student
IMAGES = config["evaluate_images"]  # the text-to-image evaluation (off for a classifier-only study)


def _guidance_tag(g):
    return f"g{g:g}".replace(".", "p")


# DM-KD synthetic sets: tag -> guidance scale (None: an existing folder); the first is the main set
DMKD_SETS = {}
if DMKD["enabled"]:
    if DMKD["synthetic"]["folder"]:
        DMKD_SETS = {"folder": None}
    else:
        DMKD_SETS = {_guidance_tag(g): g for g in DMKD["synthetic"]["guidance"]}


def dmkd_runs():
    """Student runs of the DM-KD study: name -> data (real or a set tag), share, objective, guidance, baseline."""
    if not DMKD["enabled"]:
        return {}
    runs = {"real_ce": {"data": "real", "fraction": 1.0, "objective": "ce", "guidance": None, "baseline": None}}
    sets = [(tag, tag, 1.0) for tag in DMKD_SETS]
    main = next(iter(DMKD_SETS))
    sets += [(f"{main}_f{round(100 * f)}", main, f) for f in sorted(DMKD["synthetic"]["fractions"])]
    for name, tag, share in sets:
        for objective in ("kd", "ce"):
            runs[f"{name}_{objective}"] = {"data": tag, "fraction": share, "objective": objective,
                                           "guidance": DMKD_SETS[tag],
                                           "baseline": f"{name}_ce" if objective == "kd" else None}
    return runs


DMKD_RUNS = dmkd_runs()
# every student run is trained once per seed: job name <run>_s<seed> (models/dmkd_<run>_s<seed>/)
DMKD_JOBS = {f"{run}_s{seed}": (run, seed) for run in DMKD_RUNS for seed in DMKD["seeds"]}


wildcard_constraints:
    model="|".join(MODELS),
    split="train|eval|filler",
    kind="sd|sdxl|clip",
    bk="|".join(BK_MODELS) or "block_kd_off",
    ws="|".join(SIZE_MODELS) or "size_study_off",
    dmkd_set="|".join(DMKD_SETS) or "dmkd_off",
    dmkd_run="|".join(DMKD_JOBS) or "dmkd_off",
    shard=r"\d+-of-\d+",


def model_dir(source):
    """Folder of a model the workflow builds (toy:*, tiny:*), else the hub id or local path."""
    return f"{OUT}/models/{BUILT[source]}" if is_built(source) else local_path(source)


def model_entry(name):
    """A model's config; the LoRA student is its base student with the trained adapter; a
    block-distilled or width student is sampled like the teacher (eval prompts)."""
    if name in BK_MODELS or name in SIZE_MODELS:
        teacher = config["models"]["teacher"]
        return {"source": f"{OUT}/models/{name}", "splits": ["eval"], "generation": teacher["generation"]}
    if name == "lora_student":
        base = config["models"][config["lora"]["student"]]
        return {**base, "generation": {**base["generation"], "lora": f"{OUT}/models/lora_student"}}
    return config["models"][name]


def prompt_tables(wildcards):
    """The prompt tables of the model's splits, keyed prompts_<split>."""
    return {f"prompts_{s}": f"{OUT}/prompts/{s}.parquet" for s in model_entry(wildcards.model)["splits"]}


def generate_input(wildcards):
    m = model_entry(wildcards.model)
    inputs = prompt_tables(wildcards)
    inputs["model"] = built_input(m["source"])
    if m["generation"].get("lora"):
        inputs["adapter"] = m["generation"]["lora"]
    return inputs


def generate_gather_input(wildcards):
    """The model's prompt tables and its shard manifests (shards.images > 1)."""
    return prompt_tables(wildcards) | {f"shard_{n}": f"{OUT}/images/{wildcards.model}/shards/{n}.parquet" for n in IMAGE_SHARDS}


def generate_source(wildcards):
    return model_dir(model_entry(wildcards.model)["source"])


def generate_config(wildcards):
    return model_entry(wildcards.model)["generation"]


def lora_input(wildcards):
    student = config["models"][config["lora"]["student"]]
    inputs = {}
    if config["lora"]["data"] == "teacher":
        inputs["data"] = f"{OUT}/images/teacher/manifest.parquet"
    if is_built(student["source"]):
        inputs["model"] = model_dir(student["source"])
    return inputs


def block_kd_input(wildcards):
    inputs = {"teacher": built_input(config["models"]["teacher"]["source"])}
    if BK["data"] == "teacher":
        inputs["data"] = f"{OUT}/images/teacher/manifest.parquet"
    return inputs


def block_kd_settings(wildcards):
    """The level and the ablation flag of a block-distilled student's name."""
    level = wildcards.bk.removesuffix("_nofeat")
    return {"level": level, "feature_kd": not wildcards.bk.endswith("_nofeat")}


def teacher_source(wildcards):
    return model_dir(config["models"]["teacher"]["source"])


def block_kd_data(wildcards):
    return f"{OUT}/images/teacher/manifest.parquet" if BK["data"] == "teacher" else local_path(BK["data"])


def lora_student_source(wildcards):
    return model_dir(config["models"][config["lora"]["student"]]["source"])


def lora_data(wildcards):
    data = config["lora"]["data"]
    return f"{OUT}/images/teacher/manifest.parquet" if data == "teacher" else local_path(data)


def model_splits(name):
    return model_entry(name)["splits"]


GRID_MODELS = [m for m in MODELS if "filler" in model_splits(m) and "eval" in model_splits(m)]


def built_input(source):
    """The folder of a model the workflow builds or trains, as an input list ([] for hub ids and paths)."""
    if source and is_built(source):
        return [model_dir(source)]
    return [source] if source and source.startswith(f"{OUT}/models/") else []


def clip_input(wildcards):
    return built_input(CLIP)


def distribution_input(wildcards):
    inputs = {"manifests": [f"{OUT}/images/{m}/manifest.parquet" for m in MODELS]}
    if EXTRACTOR == "classifier":
        inputs["classifier"] = f"{OUT}/models/classifier/model.safetensors"
        inputs["real"] = f"{OUT}/data/world/data.parquet"
    elif EXTRACTOR == "clip":
        inputs["model"] = built_input(METRICS["features"]["model"] or CLIP)
    return inputs


def feature_model(wildcards):
    """The extractor's model: classifier folder, Inception weights file or CLIP source."""
    if EXTRACTOR == "classifier":
        return f"{OUT}/models/classifier"
    source = METRICS["features"]["model"] or (CLIP if EXTRACTOR == "clip" else None)
    return model_dir(source) if source else None


def efficiency_input(wildcards):
    """Each model's built folder and adapter (hub ids and local paths need none)."""
    inputs = {}
    for m in MODELS:
        gen = model_entry(m)["generation"]
        inputs[m] = built_input(model_entry(m)["source"]) + ([gen["lora"]] if gen.get("lora") else [])
    return inputs


def efficiency_models(wildcards):
    """name -> (source, generation config) of every model, as sampled."""
    return {m: (model_dir(model_entry(m)["source"]), model_entry(m)["generation"]) for m in MODELS}


def loss_tables(wildcards):
    tables = {}
    sources = {m["source"] for m in config["models"].values()}
    toy = [role for role in ("teacher", "student") if f"toy:{role}" in sources]  # the toy U-Nets in use
    if WORLD and toy:
        tables.update({f"toy {part}": f"{OUT}/train/toy/{part}/loss.parquet" for part in ("vae", *toy)})
    if LORA:
        tables["LoRA"] = f"{OUT}/train/lora/loss.parquet"
    tables.update({f"BK-SDM {m}": f"{OUT}/train/{m}/loss.parquet" for m in BK_MODELS})
    tables.update({f"width {m}": f"{OUT}/train/{m}/loss.parquet" for m in SIZE_MODELS})
    return tables


def ddpm_data():
    """The image folder of the DDPM teacher (absolute or relative to the working directory)."""
    return local_path(config["ddpm_teacher"]["data"]) if config["ddpm_teacher"]["data"] else None


def ddpm_vae():
    """The latent DDPM teacher's autoencoder (a folder or hub id); None: a pixel DDPM."""
    return model_dir(config["ddpm_teacher"]["vae"]) if config["ddpm_teacher"]["vae"] else None


def ddpm_vae_input(wildcards):
    return built_input(config["ddpm_teacher"]["vae"])


def size_train_input(wildcards):
    inputs = {"teacher": built_input(config["models"]["teacher"]["source"])}
    if SIZE["data"] == "teacher":
        inputs["data"] = f"{OUT}/images/teacher/manifest.parquet"
    return inputs


def size_data(wildcards):
    return f"{OUT}/images/teacher/manifest.parquet" if SIZE["data"] == "teacher" else local_path(SIZE["data"])


def size_factor(wildcards):
    return SIZE_FACTORS[wildcards.ws]


def size_student_dirs():
    return {m: f"{OUT}/models/{m}" for m in SIZE_MODELS}


def size_analysis_input(wildcards):
    """The teacher, every width student, and the teacher's eval images (timestep MSE) or eval prompts."""
    return {"teacher": built_input(config["models"]["teacher"]["source"]), "students": list(size_student_dirs().values()),
            "eval": f"{OUT}/images/teacher/manifest.parquet", "prompts": f"{OUT}/prompts/eval.parquet"}


def size_summary_input(wildcards):
    inputs = {"timestep": f"{OUT}/metrics/timestep_mse.parquet", "trajectory": f"{OUT}/metrics/trajectory.parquet",
              "latency": f"{OUT}/metrics/size_latency.parquet"}
    if EFFICIENCY:
        inputs["efficiency"] = f"{OUT}/metrics/efficiency.parquet"
    if EXTRACTOR != "none":
        inputs["distribution"] = f"{OUT}/metrics/distribution.parquet"
    return inputs


def size_figures():
    if not SIZE_MODELS:
        return []
    return [f"{OUT}/figures/size_{f}.{ext}" for f in ("heatmap", "trajectory", "denoising", "cost", "quality")
            for ext in ("png", "pdf")]


def dmkd_real():
    """The real images of the DM-KD study: the shapes world's table or a local folder."""
    return DMKD["real"] and local_path(DMKD["real"]) or f"{OUT}/data/world/data.parquet"


def dmkd_real_input(wildcards):
    return [] if DMKD["real"] else [f"{OUT}/data/world/data.parquet"]


def dmkd_job(wildcards):
    """The settings of a DM-KD student job: its run's (data, share, objective, ...) and its seed."""
    run, seed = DMKD_JOBS[wildcards.dmkd_run]
    return {**DMKD_RUNS[run], "run": run, "seed": seed}


def dmkd_data(wildcards):
    """Where a DM-KD run's training images come from: 'real', a manifest or a folder."""
    data = dmkd_job(wildcards)["data"]
    if data == "real":
        return "real"
    return local_path(DMKD["synthetic"]["folder"]) if data == "folder" else f"{OUT}/dmkd/synthetic/{data}/manifest.parquet"


def dmkd_student_input(wildcards):
    run = dmkd_job(wildcards)
    inputs = {"real": dmkd_real_input(wildcards)}
    if run["data"] not in ("real", "folder"):
        inputs["synthetic"] = f"{OUT}/dmkd/synthetic/{run['data']}/manifest.parquet"
    if run["objective"] == "kd":
        inputs["teacher"] = f"{OUT}/models/dmkd_teacher"
    return inputs


# What each DM-KD rule depends on (so that, e.g., more student epochs do not regenerate the images)
DMKD_PROMPTS = {k: DMKD[k] for k in ("real", "labels", "classes", "prompt_template")} | {
    "n_per_class": DMKD["synthetic"]["n_per_class"]}
_STUDENT_ONLY = ("synthetic", "student", "student_train", "temperature", "kd_weight", "hard_weight", "seeds")
DMKD_TEACHER = {k: v for k, v in DMKD.items() if k not in _STUDENT_ONLY}
# a student job gets its own seed (dmkd_job); the list of seeds is not a param, so adding a seed trains only it
DMKD_STUDENT = {k: v for k, v in DMKD.items()
                if k not in ("synthetic", "teacher", "teacher_train", "teacher_robustness", "seeds")}


def dmkd_generation(wildcards):
    return {**DMKD["synthetic"]["generation"], "guidance_scale": DMKD_SETS[wildcards.dmkd_set]}


def dmkd_loss_tables(wildcards):
    """Training curves to plot: the teacher's and every run's at the first seed."""
    if not DMKD["enabled"]:
        return {}
    first = DMKD["seeds"][0]
    return {"teacher": f"{OUT}/train/dmkd_teacher/loss.parquet"} | {
        r: f"{OUT}/train/dmkd_{r}_s{first}/loss.parquet" for r in DMKD_RUNS}


def dmkd_figures():
    if not DMKD["enabled"]:
        return []
    return [f"{OUT}/figures/dmkd_{f}.{ext}" for f in ("accuracy", "curves") for ext in ("png", "pdf")]


def figure_targets():
    if not IMAGES:
        return dmkd_figures()
    figs = ["metric_bars", "radar", "distributions"]
    figs += ["distribution_metrics"] if EXTRACTOR != "none" else []
    figs += ["attribute_accuracy"] if WORLD else []
    figs += ["efficiency"] if EFFICIENCY else []
    figs += ["loss_curves"] if loss_tables(None) else []
    return [f"{OUT}/figures/{f}.{ext}" for f in figs for ext in ("png", "pdf")] + size_figures() + dmkd_figures()


def comparison_targets():
    if not IMAGES:
        return []
    names = ["side_by_side", "difference_maps"] + [f"grid_{m}" for m in GRID_MODELS]
    return [f"{OUT}/comparisons/{n}.{ext}" for n in names for ext in ("png", "pdf")]


FIGURE_TITLES = {
    "metric_bars": "Per-image metrics with 95% CIs",
    "radar": "Normalised metrics",
    "distributions": "Distributions over images",
    "distribution_metrics": "FID and KID",
    "attribute_accuracy": "Attribute accuracy",
    "efficiency": "Quality against cost",
    "loss_curves": "Training losses",
    "dmkd_accuracy": "DM-KD: real-test accuracy of classifiers taught on synthetic images",
    "dmkd_curves": "DM-KD: training loss and accuracy per epoch",
    "size_heatmap": "Model size: noise-prediction error to the teacher per timestep",
    "size_trajectory": "Model size: sampling-trajectory divergence from the teacher",
    "size_denoising": "Model size: predicted x0 along the sampling path",
    "size_cost": "Model size: latency and memory against parameters",
    "size_quality": "Model size: FID and error against size and cost, efficiency frontier",
}


def paper_figures():
    """Title -> PNG of every figure and comparison, in the order of the paper."""
    figs = {FIGURE_TITLES[Path(f).stem]: f for f in figure_targets() if f.endswith(".png")}
    if not IMAGES:
        return figs
    figs["Side by side (same prompt and seed)"] = f"{OUT}/comparisons/side_by_side.png"
    figs["Difference maps against the teacher"] = f"{OUT}/comparisons/difference_maps.png"
    figs.update({f"2x2 prompt/filler grid: {m}": f"{OUT}/comparisons/grid_{m}.png" for m in GRID_MODELS})
    return figs


def metric_tables():
    if not IMAGES:
        return {"classifier_kd": f"{OUT}/metrics/classifier_kd.parquet"} if DMKD["enabled"] else {}
    tables = ["pairwise", "summary"]
    tables += ["improvement"] if "base_student" in STUDENTS and len(STUDENTS) > 1 else []
    tables += ["distribution"] if EXTRACTOR != "none" else []
    tables += ["alignment"] if CLIP else []
    tables += ["efficiency"] if EFFICIENCY else []
    tables += ["attribute_accuracy"] if WORLD else []
    tables += ["classifier_kd"] if DMKD["enabled"] else []
    tables += ["size_study", "timestep_mse"] if SIZE_MODELS else []
    return {t: f"{OUT}/metrics/{t}.parquet" for t in tables}


def all_targets():
    targets = []
    if IMAGES:
        targets += [f"{OUT}/prompts/{s}.parquet" for s in ("train", "eval", "filler")]
        targets += [f"{OUT}/images/{m}/manifest.parquet" for m in MODELS]
    targets += list(metric_tables().values())
    if WORLD:
        targets.append(f"{OUT}/models/classifier/heldout_accuracy.parquet")
    targets += figure_targets() + comparison_targets() + [f"{OUT}/paper/summary.md"]
    return targets
