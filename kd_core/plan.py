"""The experiment plan: from a validated config, every model, run, name and output path of a study.

What the workflow derives from the config (which students exist and how they are named, where each
model's folder is, which tables and figures a run ends with, the figures' titles) is decided here,
once, in plain Python without torch, so that Snakemake parses the workflow in a second and a
notebook or a test can ask the same questions:

    plan = Plan(validate_experiment(yaml.safe_load(open("config/config.yaml")), "config/schema.yaml"))
    plan.models, plan.study("dmkd").jobs, plan.all_targets()

What is a study's own (its students, runs, jobs' params and inputs, tables, figures) its module in
kd_core.studies declares; the plan iterates over the studies. ``rules/common.smk`` keeps the
validation, the wildcard constraints and the input functions that read their wildcards; each calls
one method here or of a study.
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
from kd_core.studies import STUDIES, Study
from kd_core.studies.base import TRAIN, split_runtime

#: Title of every figure that is not a study's (the studies': Study.figure_titles), in the order of the paper.
FIGURE_TITLES = {
    "metric_bars": "Per-image metrics with 95% CIs",
    "radar": "Normalised metrics",
    "distributions": "Distributions over images",
    "distribution_metrics": "FID and KID",
    "attribute_accuracy": "Attribute accuracy",
    "efficiency": "Quality against cost",
    "loss_curves": "Training losses",
}


class Plan:
    """What one validated config makes: models, runs, names and output paths under ``results/<experiment>``.

    The studies (kd_core.studies) are in ``studies`` by config key, each built on this plan; those
    that are enabled in ``enabled``. The plan asks each for its models, tables, figures and loss
    curves and never names one."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.out = f"results/{config['experiment']}"
        self.world = config["world"]["enabled"]
        self.metrics = config["metrics"]
        self.extractor = self.metrics["features"]["extractor"]
        self.clip = self.metrics["clip_model"]
        self.efficiency = self.metrics["efficiency"]["enabled"]
        self.images = config["evaluate_images"]  # the text-to-image evaluation (off for a classifier-only study)
        self.image_shards = shard_names(config["shards"]["images"])  # generation jobs per model
        self.metric_shards = shard_names(config["shards"]["metrics"])  # pairwise-metric jobs per student
        self.studies: dict[str, Study] = {key: cls(self) for key, cls in STUDIES.items()}
        self.enabled: list[Study] = [s for s in self.studies.values() if s.enabled]

    def study(self, key: str) -> Study:
        """The study of config section ``key`` (enabled or not: a rules file builds its rules either way)."""
        return self.studies[key]

    def check_names(self) -> None:
        """Every name the plan derives from a list of numbers is unique: two width factors, guidance
        scales or set fractions that make one name (0.5 and 0.500001 both make w0p5) are refused."""
        for study in self.enabled:
            for key, values, name in study.names():
                seen: dict[str, Any] = {}
                for v in values:
                    if name(v) in seen:
                        raise KDError(f"config key '{key}' has {seen[name(v)]!r} and {v!r}, which both make the name "
                                      f"{name(v)!r}; keep one, or make them differ more")
                    seen[name(v)] = v

    def wildcard_constraints(self) -> dict[str, str]:
        """Each study's wildcards; a disabled study's, or one with no values, match only the name
        ``<key>_off``, which no file has, so that its rules never match another study's output."""
        return {name: pattern if study.enabled and pattern else f"{study.key}_off"
                for study in self.studies.values() for name, pattern in study.wildcards().items()}

    # ---- models -------------------------------------------------------------------------------
    @cached_property
    def models(self) -> list[str]:
        """Every model that samples images: the configured ones, then each enabled study's students."""
        return list(self.config["models"]) + [m for s in self.enabled for m in s.models]

    @cached_property
    def _owner(self) -> dict[str, Study]:
        return {m: s for s in self.enabled for m in s.models}

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
        """A model's config: a configured model's, or the entry of the study that trains it."""
        if name in self._owner:
            return self._owner[name].model_entry(name)
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

    # ---- the shapes world and the DDPM teacher ------------------------------------------------
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
        """The generation settings a job reads when it runs (kd_core.studies.base.RUNTIME_GENERATION)."""
        return split_runtime(self.model_entry(model)["generation"])[1]

    def generate_gather_inputs(self, model: str, split: str) -> dict[str, str]:
        """The split's prompt table and its shard manifests (shards.images > 1)."""
        return {"prompts": f"{self.out}/prompts/{split}.parquet"} | {
            f"shard_{n}": f"{self.out}/images/{model}/shards/{split}-{n}.parquet" for n in self.image_shards}

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

    @property
    def efficiency_timed(self) -> list[str]:
        """The models the efficiency table times: every model, but, when ``metrics.efficiency.steps``
        fixes one step count for all, those a study times itself at their own step counts
        (step distillation's ``<method>_s<n>`` and ``<teacher>_s<n>``: at the fixed count each would
        repeat the cost of its network, at a step count it is never sampled at)."""
        if self.metrics["efficiency"]["steps"] is None:
            return list(self.models)
        own = {m for study in self.enabled for m in study.timed_at_own_steps()}
        return [m for m in self.models if m not in own]

    def efficiency_inputs(self, models: list[str] | None = None) -> dict[str, list[str]]:
        """Each timed model's built folder and adapter (hub ids and local paths need none)."""
        inputs = {}
        for m in self.efficiency_timed if models is None else models:
            entry = self.model_entry(m)
            lora = entry["generation"].get("lora")
            inputs[m] = self.built_input(entry["source"]) + ([lora] if lora else [])
        return inputs

    def efficiency_models(self, models: list[str] | None = None) -> dict[str, tuple[str, dict]]:
        """name -> (source, generation config) of every timed model (or of ``models``), as sampled."""
        return {m: (self.model_dir(self.model_entry(m)["source"]), self.generation_params(m))
                for m in (self.efficiency_timed if models is None else models)}

    def loss_tables(self) -> dict[str, str]:
        """Title -> loss.parquet of every diffusion training run (the toy models', then each study's)."""
        tables = {}
        sources = {m["source"] for m in self.config["models"].values()}
        toy = [s.removeprefix("toy:") for s in BUILT if s.startswith("toy:") and s in sources]  # the toy U-Nets in use
        if self.world and toy:
            tables.update({f"toy {part}": f"{self.out}/train/toy/{part}/loss.parquet" for part in ("vae", *toy)})
        for study in self.enabled:
            tables.update(study.loss_tables())
        return tables

    # ---- what a run ends with -----------------------------------------------------------------
    def _reported(self) -> list[Study]:
        """The enabled studies whose tables and figures this run makes (all, or with evaluate_images
        false those that need no image evaluation)."""
        return [s for s in self.enabled if self.images or s.without_images]

    @cached_property
    def figure_titles(self) -> dict[str, str]:
        """Figure stem -> title: the workflow's own, then each study's."""
        titles = dict(FIGURE_TITLES)
        for study in self.studies.values():
            titles.update(study.figure_titles)
        return titles

    def figure_targets(self) -> list[str]:
        figs = []
        if self.images:
            figs = ["metric_bars", "radar", "distributions"]
            figs += ["distribution_metrics"] if self.extractor != "none" else []
            figs += ["attribute_accuracy"] if self.world else []
            figs += ["efficiency"] if self.efficiency else []
            figs += ["loss_curves"] if self.loss_tables() else []
        figs += [f for s in self._reported() for f in s.figures()]
        return [f"{self.out}/figures/{f}.{ext}" for f in figs for ext in ("png", "pdf")]

    def comparison_targets(self) -> list[str]:
        if not self.images:
            return []
        names = ["side_by_side", "difference_maps"] + [f"grid_{m}" for m in self.grid_models]
        return [f"{self.out}/comparisons/{n}.{ext}" for n in names for ext in ("png", "pdf")]

    def paper_figures(self) -> dict[str, str]:
        """Title -> PNG of every figure and comparison, in the order of the paper."""
        figs = {self.figure_titles[Path(f).stem]: f for f in self.figure_targets() if f.endswith(".png")}
        if not self.images:
            return figs
        figs["Side by side (same prompt and seed)"] = f"{self.out}/comparisons/side_by_side.png"
        figs["Difference maps against the teacher"] = f"{self.out}/comparisons/difference_maps.png"
        figs.update({f"2x2 prompt/filler grid: {m}": f"{self.out}/comparisons/grid_{m}.png" for m in self.grid_models})
        return figs

    def metric_tables(self) -> dict[str, str]:
        tables = []
        if self.images:
            tables = ["pairwise", "summary"]
            tables += ["improvement"] if "base_student" in self.students and len(self.students) > 1 else []
            tables += ["distribution"] if self.extractor != "none" else []
            tables += ["alignment"] if self.clip else []
            tables += ["efficiency"] if self.efficiency else []
            tables += ["attribute_accuracy"] if self.world else []
        tables += [t for s in self._reported() for t in s.metric_tables()]
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

