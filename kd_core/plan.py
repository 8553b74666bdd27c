"""The experiment plan: from a validated config, every model, run, name and output path of a study.

What the workflow derives from the config (which students exist and how they are named, the DM-KD
runs and their seeds, where each model's folder is, which tables and figures a run ends with, the
figures' titles) is decided here, once, in plain Python without torch, so that Snakemake parses the
workflow in a second and a notebook or a test can ask the same questions:

    plan = Plan(validate_experiment(yaml.safe_load(open("config/config.yaml")), "config/schema.yaml"))
    plan.models, plan.size_factors, plan.dmkd_jobs, plan.all_targets()

``rules/common.smk`` keeps the validation, the wildcard constraints and the input functions that
read their wildcards; each calls one method here.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from kd_core.config import build, read_by
from kd_core.errors import KDError
from kd_core.prompts import PromptConfig, split_fields
from kd_core.shards import shard_names
from kd_core.sources import BUILT, is_built, local_path

#: Title of every figure, by file stem, in the order of the paper.
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
SIZE_FIGURES = ("heatmap", "trajectory", "denoising", "cost", "quality")
# The typed configs the jobs' kd_core functions take ("module:Class"): a job's params are the
# entries of its config section that these read (kd_core.config.read_by), never the whole section.
TRAIN = "kd_core.train.loop:TrainConfig"
DATA = "kd_core.captions:DataConfig"
# Generation settings that cannot change an image (each image has its own seeded generator; batches
# are fixed chunks of the prompt table): given to the job as a kd_core.config.Runtime param, which
# Snakemake does not compare, so that changing them reruns nothing.
RUNTIME_GENERATION = ("batch_size",)


def split_runtime(generation: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the settings that identify the images, the :data:`RUNTIME_GENERATION` ones) of a generation config."""
    return ({k: v for k, v in generation.items() if k not in RUNTIME_GENERATION},
            {k: v for k, v in generation.items() if k in RUNTIME_GENERATION})

STUDY_CONFIGS = {"lora": "kd_core.train.lora:LoRAConfig", "block_kd": "kd_core.train.block_kd:BlockKDConfig",
                 "size_study": "kd_core.train.size_study:SizeStudyConfig"}
# the DM-KD settings only students use, and those only the teacher uses (what each rule depends on)
_STUDENT_ONLY = ("synthetic", "student", "student_train", "temperature", "kd_weight", "hard_weight", "seeds")
_TEACHER_ONLY = ("synthetic", "teacher", "teacher_train", "teacher_robustness", "seeds")


def width_student_name(factor: float) -> str:
    """``w0p25`` for factor 0.25: the model name of a width student (results/<exp>/models/<name>/)."""
    return "w" + f"{factor:g}".replace(".", "p")


def guidance_tag(guidance: float) -> str:
    """``g2`` for guidance 2.0, ``g7p5`` for 7.5: the name of a DM-KD synthetic set."""
    return f"g{guidance:g}".replace(".", "p")


def fraction_tag(fraction: float) -> str:
    """``f25`` for 0.25: the suffix of a DM-KD run on that share of the main synthetic set."""
    return f"f{round(100 * fraction)}"


class Plan:
    """What one validated config makes: models, runs, names and output paths under ``results/<experiment>``."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.out = f"results/{config['experiment']}"
        self.lora = config["lora"]["enabled"]
        self.bk = config["block_kd"]
        self.size = config["size_study"]
        self.world = config["world"]["enabled"]
        self.metrics = config["metrics"]
        self.extractor = self.metrics["features"]["extractor"]
        self.clip = self.metrics["clip_model"]
        self.efficiency = self.metrics["efficiency"]["enabled"]
        self.dmkd = config["dmkd"]
        self.images = config["evaluate_images"]  # the text-to-image evaluation (off for a classifier-only study)
        self.image_shards = shard_names(config["shards"]["images"])  # generation jobs per model
        self.metric_shards = shard_names(config["shards"]["metrics"])  # pairwise-metric jobs per student

    def check_names(self) -> None:
        """Every name the plan derives from a list of numbers is unique: two width factors, guidance
        scales or set fractions that make one name (0.5 and 0.500001 both make w0p5) are refused."""
        synthetic = self.dmkd["synthetic"]
        lists = [("size_study.factors", self.size["factors"] if self.size["enabled"] else [], width_student_name)]
        if self.dmkd["enabled"] and not synthetic["folder"]:
            lists += [("dmkd.synthetic.guidance", synthetic["guidance"], guidance_tag),
                      ("dmkd.synthetic.fractions", synthetic["fractions"], fraction_tag)]
        for key, values, name in lists:
            seen: dict[str, Any] = {}
            for v in values:
                if name(v) in seen:
                    raise KDError(f"config key '{key}' has {seen[name(v)]!r} and {v!r}, which both make the name "
                                  f"{name(v)!r}; keep one, or make them differ more")
                seen[name(v)] = v

    # ---- models -------------------------------------------------------------------------------
    @cached_property
    def bk_models(self) -> list[str]:
        """Block-distilled students: one per level, and ``<level>_nofeat`` for the feature-KD ablation."""
        if not self.bk["enabled"]:
            return []
        return self.bk["levels"] + ([f"{lv}_nofeat" for lv in self.bk["levels"]] if self.bk["ablate_features"] else [])

    @cached_property
    def size_factors(self) -> dict[str, float]:
        """Width students of the model-size study: model name -> width factor, narrowest first."""
        return {width_student_name(f): f for f in sorted(self.size["factors"])} if self.size["enabled"] else {}

    @property
    def size_models(self) -> list[str]:
        return list(self.size_factors)

    @cached_property
    def size_compared(self) -> dict[str, float]:
        """``size_study.compare_init``: every width student again from the other initialisation, named
        ``w<factor>_<init>`` (``w0p5_random``), trained and evaluated like every model; the size
        analyses keep to the students of ``size_study.init``. Name -> width factor."""
        if not (self.size["enabled"] and self.size["compare_init"]):
            return {}
        return {f"{width_student_name(f)}_{self._other_init}": f for f in sorted(self.size["factors"])}

    @property
    def _other_init(self) -> str:
        return "random" if self.size["init"] == "teacher" else "teacher"

    @property
    def width_students(self) -> list[str]:
        """Every width student that trains: the study's, then those of the other initialisation."""
        return self.size_models + list(self.size_compared)

    def width_student_factor(self, name: str) -> float:
        return self.size_factors.get(name, self.size_compared.get(name))

    def width_student_init(self, name: str) -> str:
        return self._other_init if name in self.size_compared else self.size["init"]

    def train_params(self, section: str) -> dict[str, Any]:
        """What a training job of ``lora``, ``block_kd`` or ``size_study`` reads of its section: its data
        source, the fields of DataConfig and of the study's config, and its TrainConfig (not the list of
        levels or factors, not the analyses' settings: adding a level trains only that level)."""
        return read_by(self.config[section], DATA, STUDY_CONFIGS[section], keep=("data",), nested={"train": TRAIN})

    def world_data_params(self, split: str) -> dict[str, Any]:
        """What one split of the rendered world reads of ``world``: the image size and its own count
        (not the other split's, not the classifier's or the toy models' settings)."""
        params = read_by(self.config["world"], "kd_core.world.dataset:WorldDataConfig")
        return {k: v for k, v in params.items() if k != ("n_test" if split == "train" else "n_train")}

    def world_table(self, split: str) -> str:
        """The rendered world's table of ``split`` (train or test); its images are in ``data/world/<split>/``."""
        return f"{self.out}/data/world/{split}.parquet"

    @property
    def classifier_params(self) -> dict[str, Any]:
        return read_by(self.config["world"]["classifier"], "kd_core.world.classifier:AttributeClassifierConfig")

    @property
    def ddpm_params(self) -> dict[str, Any]:
        """What the DDPM teacher's training reads of ``ddpm_teacher``: its U-Net and training configs."""
        return read_by(self.config["ddpm_teacher"], nested={"model": "kd_core.train.ddpm:DDPMConfig", "train": TRAIN})

    @cached_property
    def models(self) -> list[str]:
        """Every model that samples images: the configured ones, the LoRA student, the distilled students."""
        return list(self.config["models"]) + (["lora_student"] if self.lora else []) + self.bk_models + self.width_students

    @property
    def students(self) -> list[str]:
        return [m for m in self.models if m != "teacher"]

    def model_dir(self, source: str) -> str:
        """Folder of a model the workflow builds (toy:*, tiny:*), else the hub id or local path."""
        return f"{self.out}/models/{BUILT[source]}" if is_built(source) else local_path(source)

    def built_input(self, source: str | None) -> list[str]:
        """The folder of a model the workflow builds or trains, as an input list ([] for hub ids and paths)."""
        if source and is_built(source):
            return [self.model_dir(source)]
        return [source] if source and source.startswith(f"{self.out}/models/") else []

    def model_entry(self, name: str) -> dict[str, Any]:
        """A model's config; the LoRA student is its base student with the trained adapter; a
        block-distilled or width student is sampled like the teacher (eval prompts)."""
        if name in self.bk_models or name in self.width_students:
            teacher = self.config["models"]["teacher"]
            return {"source": f"{self.out}/models/{name}", "splits": ["eval"], "generation": teacher["generation"]}
        if name == "lora_student":
            base = self.config["models"][self.config["lora"]["student"]]
            return {**base, "generation": {**base["generation"], "lora": f"{self.out}/models/lora_student"}}
        return self.config["models"][name]

    @cached_property
    def grid_models(self) -> list[str]:
        """Models with both eval and filler images: each gets a 2x2 prompt/filler grid."""
        return [m for m in self.models if {"filler", "eval"} <= set(self.model_entry(m)["splits"])]

    @property
    def teacher(self) -> dict[str, Any]:
        return self.config["models"]["teacher"]

    @property
    def teacher_source(self) -> str | None:
        return self.model_dir(self.teacher["source"]) if "teacher" in self.config["models"] else None

    @property
    def teacher_images(self) -> str:
        """The teacher's train-split manifest: the training images of the studies (data: teacher)."""
        return self.manifest("teacher", "train")

    def manifest(self, model: str, split: str = "eval") -> str:
        """The manifest of one model's images of one prompt split (each made by its own job)."""
        return f"{self.out}/images/{model}/{split}.parquet"

    def manifests(self, models: list[str] | None = None, split: str = "eval") -> list[str]:
        return [self.manifest(m, split) for m in (self.models if models is None else models)]

    # ---- prompts ------------------------------------------------------------------------------
    @cached_property
    def prompt_config(self) -> PromptConfig:
        return build(PromptConfig, self.config["prompts"], seed=self.config["seed"])

    def prompt_params(self, split: str) -> dict[str, Any]:
        """What one split's prompt table depends on (kd_core.prompts.split_fields): adding eval prompts
        leaves the train table, and every job that reads it, as it was."""
        cfg = self.prompt_config
        return {k: getattr(cfg, k) for k in ("seed", *split_fields(cfg, split))}

    # ---- generation ---------------------------------------------------------------------------
    def generate_inputs(self, model: str, split: str) -> dict[str, Any]:
        m = self.model_entry(model)
        if split not in m["splits"]:
            raise KDError(f"model {model!r} has no {split!r} images (its splits: {m['splits']})")
        inputs: dict[str, Any] = {"prompts": f"{self.out}/prompts/{split}.parquet", "model": self.built_input(m["source"])}
        if m["generation"].get("lora"):
            inputs["adapter"] = m["generation"]["lora"]
        return inputs

    def generation_params(self, model: str) -> dict[str, Any]:
        """A model's generation settings that identify its images (not the batch size)."""
        return split_runtime(self.model_entry(model)["generation"])[0]

    def generation_runtime(self, model: str) -> dict[str, Any]:
        """The generation settings a job reads when it runs (:data:`RUNTIME_GENERATION`)."""
        return split_runtime(self.model_entry(model)["generation"])[1]

    def generate_gather_inputs(self, model: str, split: str) -> dict[str, str]:
        """The split's prompt table and its shard manifests (shards.images > 1)."""
        return {"prompts": f"{self.out}/prompts/{split}.parquet"} | {
            f"shard_{n}": f"{self.out}/images/{model}/shards/{split}-{n}.parquet" for n in self.image_shards}

    # ---- training data and inputs -------------------------------------------------------------
    def training_data(self, section: str) -> str:
        """The training images of ``lora``, ``block_kd`` or ``size_study``: the teacher's manifest or a local source."""
        data = self.config[section]["data"]
        return self.teacher_images if data == "teacher" else local_path(data)

    def _with_data(self, section: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return inputs | ({"data": self.teacher_images} if self.config[section]["data"] == "teacher" else {})

    @property
    def lora_student_source(self) -> str | None:
        return self.model_dir(self.config["models"][self.config["lora"]["student"]]["source"]) if self.lora else None

    def lora_inputs(self) -> dict[str, Any]:
        if not self.lora:
            return {}
        student = self.config["models"][self.config["lora"]["student"]]["source"]
        return self._with_data("lora", {}) | ({"model": self.model_dir(student)} if is_built(student) else {})

    def block_kd_inputs(self) -> dict[str, Any]:
        if not self.bk["enabled"]:
            return {}
        return self._with_data("block_kd", {"teacher": self.built_input(self.teacher["source"])})

    def size_train_inputs(self) -> dict[str, Any]:
        if not self.size["enabled"]:
            return {}
        return self._with_data("size_study", {"teacher": self.built_input(self.teacher["source"])})

    def size_student_dirs(self) -> dict[str, str]:
        return {m: f"{self.out}/models/{m}" for m in self.size_models}

    def size_analysis_inputs(self) -> dict[str, Any]:
        """The teacher, every width student, and the teacher's eval images (timestep MSE) or eval prompts."""
        if not self.size["enabled"]:
            return {}
        return self.size_model_inputs() | {"eval": self.manifest("teacher", "eval"), "prompts": f"{self.out}/prompts/eval.parquet"}

    def size_model_inputs(self) -> dict[str, Any]:
        """The teacher and every width student: what the latency measurement reads (no images, no prompts)."""
        if not self.size["enabled"]:
            return {}
        return {"teacher": self.built_input(self.teacher["source"]), "students": list(self.size_student_dirs().values())}

    def size_summary_inputs(self) -> dict[str, str]:
        inputs = {"timestep": f"{self.out}/metrics/timestep_mse.parquet",
                  "trajectory": f"{self.out}/metrics/trajectory.parquet",
                  "latency": f"{self.out}/metrics/size_latency.parquet"}
        if self.efficiency:
            inputs["efficiency"] = f"{self.out}/metrics/efficiency.parquet"
        if self.extractor != "none":
            inputs["distribution"] = f"{self.out}/metrics/distribution.parquet"
        if self.world:  # attribute accuracy of the teacher and every width student
            inputs["attributes"] = [f"{self.out}/metrics/attributes/{m}.parquet" for m in ["teacher", *self.size_models]]
        return inputs

    @property
    def ddpm_data(self) -> str | None:
        """The image folder of the DDPM teacher (absolute or relative to the working directory)."""
        data = self.config["ddpm_teacher"]["data"]
        return local_path(data) if data else None

    @property
    def ddpm_vae(self) -> str | None:
        """The latent DDPM teacher's autoencoder (a folder or hub id); None: a pixel DDPM."""
        vae = self.config["ddpm_teacher"]["vae"]
        return self.model_dir(vae) if vae else None

    # ---- metrics inputs -----------------------------------------------------------------------
    def distribution_inputs(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {"manifests": self.manifests()}
        if self.extractor == "classifier":
            inputs["classifier"] = f"{self.out}/models/classifier/model.safetensors"
            inputs["real"] = self.world_table("test")
        elif self.extractor == "clip":
            inputs["model"] = self.built_input(self.metrics["features"]["model"] or self.clip)
        return inputs

    @property
    def feature_model(self) -> str | None:
        """The extractor's model: classifier folder, Inception weights file or CLIP source."""
        if self.extractor == "classifier":
            return f"{self.out}/models/classifier"
        source = self.metrics["features"]["model"] or (self.clip if self.extractor == "clip" else None)
        return self.model_dir(source) if source else None

    def efficiency_inputs(self) -> dict[str, list[str]]:
        """Each model's built folder and adapter (hub ids and local paths need none)."""
        inputs = {}
        for m in self.models:
            entry = self.model_entry(m)
            lora = entry["generation"].get("lora")
            inputs[m] = self.built_input(entry["source"]) + ([lora] if lora else [])
        return inputs

    def efficiency_models(self) -> dict[str, tuple[str, dict]]:
        """name -> (source, generation config) of every model, as sampled."""
        return {m: (self.model_dir(self.model_entry(m)["source"]), self.generation_params(m)) for m in self.models}

    def loss_tables(self) -> dict[str, str]:
        """Title -> loss.parquet of every diffusion training run (the toy models', LoRA, block KD, width)."""
        tables = {}
        sources = {m["source"] for m in self.config["models"].values()}
        toy = [role for role in ("teacher", "student") if f"toy:{role}" in sources]  # the toy U-Nets in use
        if self.world and toy:
            tables.update({f"toy {part}": f"{self.out}/train/toy/{part}/loss.parquet" for part in ("vae", *toy)})
        if self.lora:
            tables["LoRA"] = f"{self.out}/train/lora/loss.parquet"
        tables.update({f"BK-SDM {m}": f"{self.out}/train/{m}/loss.parquet" for m in self.bk_models})
        tables.update({f"width {m}": f"{self.out}/train/{m}/loss.parquet" for m in self.width_students})
        return tables

    # ---- DM-KD --------------------------------------------------------------------------------
    @cached_property
    def dmkd_sets(self) -> dict[str, float | None]:
        """Synthetic sets: tag -> guidance scale (None: an existing folder); the first is the main set."""
        if not self.dmkd["enabled"]:
            return {}
        if self.dmkd["synthetic"]["folder"]:
            return {"folder": None}
        return {guidance_tag(g): g for g in self.dmkd["synthetic"]["guidance"]}

    @cached_property
    def dmkd_runs(self) -> dict[str, dict[str, Any]]:
        """Student runs: name -> data (real or a set tag), share, objective, guidance, baseline."""
        if not self.dmkd["enabled"]:
            return {}
        runs = {"real_ce": {"data": "real", "fraction": 1.0, "objective": "ce", "guidance": None, "baseline": None}}
        sets = [(tag, tag, 1.0) for tag in self.dmkd_sets]
        main = next(iter(self.dmkd_sets))
        sets += [(f"{main}_{fraction_tag(f)}", main, f) for f in sorted(self.dmkd["synthetic"]["fractions"])]
        for name, tag, share in sets:
            for objective in ("kd", "ce"):
                runs[f"{name}_{objective}"] = {"data": tag, "fraction": share, "objective": objective,
                                               "guidance": self.dmkd_sets[tag],
                                               "baseline": f"{name}_ce" if objective == "kd" else None}
        return runs

    @cached_property
    def dmkd_jobs(self) -> dict[str, tuple[str, int]]:
        """Every student run once per seed: job name <run>_s<seed> (models/dmkd_<run>_s<seed>/) -> (run, seed)."""
        return {f"{run}_s{seed}": (run, seed) for run in self.dmkd_runs for seed in self.dmkd["seeds"]}

    @property
    def dmkd_prompt_settings(self) -> dict[str, Any]:
        """What the class prompts depend on (so that, e.g., more student epochs do not regenerate images)."""
        keys = ("real", "labels", "classes", "prompt_template")
        return {k: self.dmkd[k] for k in keys} | {"n_per_class": self.dmkd["synthetic"]["n_per_class"]}

    @property
    def dmkd_teacher_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.dmkd.items() if k not in _STUDENT_ONLY}

    @property
    def dmkd_student_settings(self) -> dict[str, Any]:
        """A student job gets its own seed (dmkd_job): adding a seed to the list trains only it."""
        return {k: v for k, v in self.dmkd.items() if k not in _TEACHER_ONLY}

    @property
    def dmkd_real(self) -> str:
        """The real images of the DM-KD study: the shapes world's table or a local folder."""
        return self.dmkd["real"] and local_path(self.dmkd["real"]) or f"{self.out}/data/world"

    def dmkd_real_inputs(self) -> list[str]:
        return [] if self.dmkd["real"] else [self.world_table("train"), self.world_table("test")]

    def dmkd_job(self, job: str) -> dict[str, Any]:
        """The settings of a student job: its run's (data, share, objective, ...) and its seed."""
        run, seed = self.dmkd_jobs[job]
        return {**self.dmkd_runs[run], "run": run, "seed": seed}

    def dmkd_data(self, job: str) -> str:
        """Where a run's training images come from: 'real', a manifest or a folder."""
        data = self.dmkd_job(job)["data"]
        if data == "real":
            return "real"
        if data == "folder":
            return local_path(self.dmkd["synthetic"]["folder"])
        return f"{self.out}/dmkd/synthetic/{data}/manifest.parquet"

    def dmkd_student_inputs(self, job: str) -> dict[str, Any]:
        run = self.dmkd_job(job)
        inputs: dict[str, Any] = {"real": self.dmkd_real_inputs()}
        if run["data"] not in ("real", "folder"):
            inputs["synthetic"] = f"{self.out}/dmkd/synthetic/{run['data']}/manifest.parquet"
        if run["objective"] == "kd":
            inputs["teacher"] = f"{self.out}/models/dmkd_teacher"
        return inputs

    def dmkd_generation(self, synthetic_set: str) -> dict[str, Any]:
        return split_runtime(self.dmkd["synthetic"]["generation"])[0] | {"guidance_scale": self.dmkd_sets[synthetic_set]}

    def dmkd_generation_runtime(self) -> dict[str, Any]:
        return split_runtime(self.dmkd["synthetic"]["generation"])[1]

    def dmkd_loss_tables(self) -> dict[str, str]:
        """Training curves to plot: the teacher's and every run's at the first seed."""
        if not self.dmkd["enabled"]:
            return {}
        first = self.dmkd["seeds"][0]
        return {"teacher": f"{self.out}/train/dmkd_teacher/loss.parquet"} | {
            r: f"{self.out}/train/dmkd_{r}_s{first}/loss.parquet" for r in self.dmkd_runs}

    # ---- what a run ends with -----------------------------------------------------------------
    def size_figures(self) -> list[str]:
        if not self.size_models:
            return []
        return [f"{self.out}/figures/size_{f}.{ext}" for f in SIZE_FIGURES for ext in ("png", "pdf")]

    def dmkd_figures(self) -> list[str]:
        if not self.dmkd["enabled"]:
            return []
        return [f"{self.out}/figures/dmkd_{f}.{ext}" for f in ("accuracy", "curves") for ext in ("png", "pdf")]

    def figure_targets(self) -> list[str]:
        if not self.images:
            return self.dmkd_figures()
        figs = ["metric_bars", "radar", "distributions"]
        figs += ["distribution_metrics"] if self.extractor != "none" else []
        figs += ["attribute_accuracy"] if self.world else []
        figs += ["efficiency"] if self.efficiency else []
        figs += ["loss_curves"] if self.loss_tables() else []
        return ([f"{self.out}/figures/{f}.{ext}" for f in figs for ext in ("png", "pdf")] + self.size_figures()
                + self.dmkd_figures())

    def comparison_targets(self) -> list[str]:
        if not self.images:
            return []
        names = ["side_by_side", "difference_maps"] + [f"grid_{m}" for m in self.grid_models]
        return [f"{self.out}/comparisons/{n}.{ext}" for n in names for ext in ("png", "pdf")]

    def paper_figures(self) -> dict[str, str]:
        """Title -> PNG of every figure and comparison, in the order of the paper."""
        figs = {FIGURE_TITLES[Path(f).stem]: f for f in self.figure_targets() if f.endswith(".png")}
        if not self.images:
            return figs
        figs["Side by side (same prompt and seed)"] = f"{self.out}/comparisons/side_by_side.png"
        figs["Difference maps against the teacher"] = f"{self.out}/comparisons/difference_maps.png"
        figs.update({f"2x2 prompt/filler grid: {m}": f"{self.out}/comparisons/grid_{m}.png" for m in self.grid_models})
        return figs

    def metric_tables(self) -> dict[str, str]:
        if not self.images:
            return {"dmkd": f"{self.out}/metrics/dmkd.parquet"} if self.dmkd["enabled"] else {}
        tables = ["pairwise", "summary"]
        tables += ["improvement"] if "base_student" in self.students and len(self.students) > 1 else []
        tables += ["distribution"] if self.extractor != "none" else []
        tables += ["alignment"] if self.clip else []
        tables += ["efficiency"] if self.efficiency else []
        tables += ["attribute_accuracy"] if self.world else []
        tables += ["dmkd"] if self.dmkd["enabled"] else []
        tables += ["size_study", "timestep_mse"] if self.size_models else []
        return {t: f"{self.out}/metrics/{t}.parquet" for t in tables}

    def all_targets(self) -> list[str]:
        targets = []
        if self.images:
            targets += [f"{self.out}/prompts/{s}.parquet" for s in ("train", "eval", "filler")]
            targets += [self.manifest(m, s) for m in self.models for s in self.model_entry(m)["splits"]]
        targets += list(self.metric_tables().values())
        if self.world:
            targets.append(f"{self.out}/models/classifier/heldout_accuracy.parquet")
        return targets + self.figure_targets() + self.comparison_targets() + [f"{self.out}/paper/summary.md"]
