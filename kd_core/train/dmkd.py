"""The DM-KD study's runs: the classifier teacher on real data, and students on real or synthetic data.

One function per run kind, each reading its data, training through
:func:`kd_core.train.classifier.train_classifier` and writing a run folder
(``model/``, ``train/loss.parquet``, ``predictions.parquet`` on the real test split).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from kd_core.class_prompts import grammar_classes
from kd_core.config import build
from kd_core.errors import KDError
from kd_core.image_folder import LabelledImages
from kd_core.sources import fingerprint
from kd_core.train.classifier import (
    ClassifierConfig,
    ClassifierModelConfig,
    load_classifier_model,
    train_classifier,
)
from kd_core.train.dmkd_data import folder_images, manifest_images, world_images
from kd_core.train.loop import TrainConfig, TrainResult, steps_per_epoch


class RunPaths(NamedTuple):
    """Where a run writes: the model folder, the training folder (checkpoints, loss) and the test predictions."""

    model: str | Path
    train: str | Path
    predictions: str | Path


@dataclass(frozen=True)
class DMKDData:
    """Where the real images are, what the classes are and which images a student trains on.

    ``real`` is the shapes world's data folder (``train.parquet``, ``test.parquet``; classes from ``labels`` of
    ``grammar``) or a folder with ``train/<class>/`` and ``test/<class>/`` (CIFAR-10 layout;
    classes from ``classes`` or the train folder's sub-folders).
    """

    real: str
    labels: tuple[str, ...] = ("shape",)
    grammar: str | None = "shapes"
    classes: tuple[str, ...] | None = None
    store_size: int | None = None  # images are resized to this on load (None: as stored); e.g. 32 for CIFAR-like sets
    images: str = "real"  # a student's training images: "real", a synthetic manifest (.parquet) or <folder>/<class>/
    fraction: float = 1.0  # the first share of every class of ``images`` (nested subsets for the set-size curve)

    @property
    def is_world(self) -> bool:
        return self.real.endswith(".parquet") or (Path(self.real) / "train.parquet").is_file()


def study_classes(d: DMKDData) -> list[str]:
    if d.is_world:
        return grammar_classes(d.grammar or "shapes", list(d.labels))
    if d.classes:
        return list(d.classes)
    train = Path(d.real) / "train"
    if not train.is_dir():
        raise KDError(f"real image folder {d.real} has no train/ sub-folder; expected train/<class>/ and test/<class>/")
    return sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))


def real_data(d: DMKDData, split: str, classes: list[str]) -> LabelledImages:
    """The real ``train`` or ``test`` images."""
    if d.is_world:
        return world_images(d.real, split, list(d.labels), classes, d.store_size)
    return folder_images(Path(d.real) / split, classes, d.store_size)


def synthetic_data(source: str, classes: list[str], fraction: float = 1.0, size: int | None = None) -> LabelledImages:
    """Synthetic images: a generation manifest (labelled prompts) or a ``<folder>/<class>/`` folder;
    ``fraction`` keeps the first share of every class (nested subsets for the set-size curve)."""
    if source.endswith(".parquet"):
        data = manifest_images(source, classes, size=size)
    else:
        data = folder_images(source, classes, size)
    if fraction >= 1.0:
        return data
    keep = []
    for c in range(len(classes)):
        members = torch.nonzero(data.labels == c).flatten()
        keep.append(members[: max(1, round(fraction * len(members)))])
    return data.subset(torch.cat(keep).sort().values)


def train_teacher(source: str | None, data: DMKDData, out: RunPaths, cfg: ClassifierConfig, train: TrainConfig
                  ) -> TrainResult:
    """The classifier teacher: cross-entropy on the real train split, from the pre-trained classifier
    ``source`` (hub id or folder) or, with ``None``, a ResNet of ``cfg.model``'s sizes at random init."""
    classes = study_classes(data)
    cfg = replace(cfg, objective="ce", model=replace(cfg.model, source=source))
    return train_classifier(real_data(data, "train", classes), real_data(data, "test", classes), *out, cfg, train,
                            name="dmkd teacher", run_key=f"teacher|{fingerprint(data.real)}")


def train_student(source: str | Path | None, data: DMKDData, out: RunPaths, cfg: ClassifierConfig, train: TrainConfig,
                  name: str = "dmkd student") -> TrainResult:
    """A randomly initialised student on ``data.images`` ("real", a synthetic manifest or folder) with
    ``cfg.objective``, taught by the classifier teacher in ``source`` (a folder; ``None`` for hard labels)."""
    classes = study_classes(data)
    images, fraction = data.images, data.fraction
    train_data = (real_data(data, "train", classes) if images == "real"
                  else synthetic_data(images, classes, fraction, data.store_size))
    if fraction < 1.0 and train.max_steps is None:
        # a share of the set trains for as many optimizer steps as the whole set: set size, not budget, varies
        full = round(len(train_data) / fraction * (1 - cfg.val_fraction))
        train = replace(train, max_steps=train.epochs * steps_per_epoch(full, train.batch_size, train.gradient_accumulation))
    teacher = load_classifier_model(source) if cfg.objective == "kd" and source is not None else None
    if teacher is not None and list(teacher.config.id2label.values()) != classes:
        raise KDError(f"{name}: the teacher in {source} knows classes {list(teacher.config.id2label.values())}, "
                      f"the study has {classes}; retrain the teacher")
    key = f"{images}|{fingerprint(images if images != 'real' else data.real)}|{fraction}|{fingerprint(str(source)) if source else ''}"
    return train_classifier(train_data, real_data(data, "test", classes), *out, cfg, train, teacher, name=name,
                            run_key=key)


def study_data(section: dict, real: str, grammar: str | None, images: str = "real", fraction: float = 1.0) -> DMKDData:
    """The study's data from the ``dmkd`` config section, the resolved real-data path and a run's training images."""
    return DMKDData(real=real, labels=tuple(section.get("labels", ("shape",))), grammar=grammar,
                    classes=tuple(section["classes"]) if section.get("classes") else None,
                    store_size=section.get("store_size"), images=images, fraction=fraction)


def run_config(section: dict, role: str, objective: str = "kd") -> ClassifierConfig:
    """The ``ClassifierConfig`` of the teacher (``role="teacher"``) or of a student, from the config section."""
    model = build(ClassifierModelConfig, section.get(role, {}), image_size=section.get("image_size", 32))
    robust = section.get("teacher_robustness", {}) if role == "teacher" else {}
    return build(ClassifierConfig, section, objective=objective, model=model,
                 augment_blur=robust.get("blur", 0.0), augment_noise=robust.get("noise", 0.0))


def train_config(section: dict, role: str, seed: int) -> TrainConfig:
    """The ``TrainConfig`` of the teacher or of a student (``<role>_train``): the best validation accuracy is kept."""
    return build(TrainConfig, section.get(f"{role}_train", {}), seed=seed, monitor="accuracy", monitor_mode="max",
                 restore_best=True)
