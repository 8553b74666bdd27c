"""What a study declares: the base class of every module of :mod:`kd_core.studies`.

A study is one config section (``Study.key``), one rules file (``rules/<key>.smk``) and one module
here. Its class names the typed config its training reads, the models it adds (each sampled and
evaluated like every other model), the params and inputs of its jobs, its tables, figures and loss
curves, the wildcards of its rules, and the checks of its config section. :class:`kd_core.plan.Plan`
and the whole-experiment checks iterate over the registered studies and never name one.

Plain Python without torch or pandas at import time (Snakemake parses the workflow with it); a
paper table's printing functions import pandas when they are called.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kd_core.config import read_by
from kd_core.sources import local_path

if TYPE_CHECKING:
    from kd_core.plan import Plan

# The typed configs the jobs' kd_core functions take ("module:Class"): a job's params are the
# entries of its config section that these read (kd_core.config.read_by), never the whole section.
TRAIN = "kd_core.train.loop:TrainConfig"
DATA = "kd_core.captions:DataConfig"
RUNTIME_GENERATION = ("batch_size",)


def split_runtime(generation: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the settings that identify the images, the :data:`RUNTIME_GENERATION` ones) of a generation
    config. The latter cannot change an image (each image has its own seeded generator; batches are
    fixed chunks of the prompt table): a job gets them as a kd_core.config.Runtime param, which
    Snakemake does not compare, so that changing them reruns nothing."""
    return ({k: v for k, v in generation.items() if k not in RUNTIME_GENERATION},
            {k: v for k, v in generation.items() if k in RUNTIME_GENERATION})


@dataclass(frozen=True)
class PaperTable:
    """A metric table as the paper prints it: its title, ``format`` (the Parquet table -> the table
    as printed) and ``headline`` ((table, Parquet metadata) -> sentences of the paper's headline)."""

    title: str
    format: Callable[[Any], Any]
    headline: Callable[[Any, dict], list[str]] | None = None


class Study:
    """One study of the workflow; subclasses set the class attributes and override what they add."""

    registry: ClassVar[dict[str, type[Study]]] = {}

    key: ClassVar[str]  #: config section, rules/<key>.smk, kd_core/studies/<key>.py
    order: ClassVar[int]  #: where its models, tables and figures come among the studies'
    config_class: ClassVar[str | None] = None  #: "module:Class" of its trainings' typed config
    trains_on_prompts: ClassVar[bool] = True  #: refused by an unconditional study (prompts.grammar: null)
    samples_images: ClassVar[bool] = False  #: its students are sampled and evaluated: needs evaluate_images
    compares_with_teacher: ClassVar[bool] = False  #: its students are compared with the teacher (no base student needed)
    without_images: ClassVar[bool] = False  #: its tables and figures are made with evaluate_images: false too
    figure_titles: ClassVar[dict[str, str]] = {}  #: figure file stem -> title, in the order of the paper
    paper_tables: ClassVar[dict[str, PaperTable]] = {}  #: metric table name -> how the paper prints it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:
            Study.registry[cls.key] = cls

    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = plan.config
        self.cfg = plan.config[self.key]
        self.out = plan.out

    @property
    def enabled(self) -> bool:
        return bool(self.cfg["enabled"])

    # ---- models and outputs (only asked of an enabled study) -------------------------------------
    @property
    def models(self) -> list[str]:
        """The models it adds, each sampled and evaluated like every configured model."""
        return []

    def model_entry(self, name: str) -> dict[str, Any]:
        """The config entry of one of :attr:`models` (source, splits, generation), as sampled."""
        raise KeyError(name)

    def timed_at_own_steps(self) -> list[str]:
        """Those of :attr:`models` whose step latency its own job measures, each at the step count it
        samples with (the efficiency table leaves them out when it times every model at one fixed
        step count: there they would repeat their network's cost at a step count they never use)."""
        return []

    def loss_tables(self) -> dict[str, str]:
        """Title -> loss.parquet of each of its diffusion trainings (the loss-curve figure)."""
        return {}

    def metric_tables(self) -> list[str]:
        """Names of its tables ``metrics/<name>.parquet`` that the paper reads."""
        return []

    def figures(self) -> list[str]:
        """Stems of its figures ``figures/<stem>.{png,pdf}`` (each with a title in :attr:`figure_titles`)."""
        return []

    def wildcards(self) -> dict[str, str]:
        """Wildcard name -> the regular expression of its values (rules/common.smk's constraints)."""
        return {}

    # ---- config checks ---------------------------------------------------------------------------
    def names(self) -> list[tuple[str, list, Callable[[Any], str]]]:
        """(config key, values, naming function) of each list whose values name models or runs: two
        values that make one name are refused."""
        return []

    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        """Its config section against the rest of the config and the files it points at; raises a
        ConfigError naming the key. ``folders``: each configured model's folder where its files are
        here; ``grammar``: the main prompt grammar (None for an unconditional study)."""

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        """(configured model, config key, size) of each image size it trains or samples that model at."""
        return []

    # ---- shared by the studies that distil a diffusion model on images -----------------------------
    def train_params(self) -> dict[str, Any]:
        """What a training job reads of the section: its data source, the fields of DataConfig and of
        the study's config, and its TrainConfig (not a list of levels or factors, not the analyses'
        settings: adding a level trains only that level)."""
        return read_by(self.cfg, DATA, self.config_class, keep=("data",), nested={"train": TRAIN})

    @property
    def teacher_images(self) -> str:
        """The manifest ``data: teacher`` means: the teacher's train-split images."""
        return self.plan.teacher_images

    def training_data(self) -> str:
        """The training images: the teacher's train-split manifest, or a local source (folder, table)."""
        data = self.cfg["data"]
        return self.teacher_images if data == "teacher" else local_path(data)

    def with_data(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """``inputs`` and, when the study trains on the teacher's images, their manifest."""
        return inputs | ({"data": self.teacher_images} if self.cfg["data"] == "teacher" else {})

    def sampled_like_teacher(self, name: str) -> dict[str, Any]:
        """A trained student's entry: its folder, sampled on the eval prompts with the teacher's settings."""
        return {"source": f"{self.out}/models/{name}", "splits": ["eval"],
                "generation": self.config["models"]["teacher"]["generation"]}

    def teacher_resolution(self) -> list[tuple[str, str, int | None]]:
        """``<key>.resolution``, at which the study runs the teacher."""
        return [("teacher", f"{self.key}.resolution", self.cfg["resolution"])]


#: a study's quality measure (paper table, headline, figures): the first of these its table has
QUALITY = ("accuracy_all", "clip_score", "ssim", "psnr")


def quality(df) -> str | None:
    """Attribute accuracy in the shapes world, else the CLIP score, else SSIM or PSNR to the teacher."""
    return next((m for m in QUALITY if m in set(df["metric"])), None)


def format_ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``mean [low, high]`` for a paper table; ``n/a`` where the mean is not a finite number."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
