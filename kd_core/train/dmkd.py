"""The DM-KD study's runs: the classifier teacher on real data, and students on real or synthetic data.

One function per run kind, each reading its data, training through
:func:`kd_core.train.classifier_kd.train_classifier` and writing a run folder
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
from kd_core.train.classifier_data import folder_images, manifest_images, world_images
from kd_core.train.classifier_kd import (
    ClassifierKDConfig,
    ClassifierModelConfig,
    load_classifier_model,
    train_classifier,
)
from kd_core.train.loop import TrainConfig, steps_per_epoch


class RunPaths(NamedTuple):
    """Where a run writes: the model folder, the training folder (checkpoints, loss) and the test predictions."""

    model: str | Path
    train: str | Path
    predictions: str | Path


@dataclass(frozen=True)
class DMKDData:
    """Where the real images are and what the classes are.

    ``real`` is the shapes world's data table (``data.parquet``; classes from ``labels`` of
    ``grammar``) or a folder with ``train/<class>/`` and ``test/<class>/`` (CIFAR-10 layout;
    classes from ``classes`` or the train folder's sub-folders).
    """

    real: str
    labels: tuple[str, ...] = ("shape",)
    grammar: str | None = "shapes"
    classes: tuple[str, ...] | None = None
    store_size: int | None = None  # images are resized to this on load (None: as stored); e.g. 32 for CIFAR-like sets

    @property
    def is_world(self) -> bool:
        return self.real.endswith(".parquet")


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


def train_teacher(d: DMKDData, out: RunPaths, cfg: ClassifierKDConfig) -> None:
    """The classifier teacher: cross-entropy on the real train split (pre-trained weights if ``cfg.model.source``)."""
    classes = study_classes(d)
    key = f"teacher|{fingerprint(d.real)}"
    train_classifier(real_data(d, "train", classes), real_data(d, "test", classes), *out,
                     replace(cfg, objective="ce"), name="dmkd teacher", run_key=key)


def train_student(d: DMKDData, data: str, out: RunPaths, cfg: ClassifierKDConfig, teacher_dir: str | Path | None = None,
                  fraction: float = 1.0, name: str = "dmkd student") -> None:
    """A randomly initialised student on ``data`` ("real", a synthetic manifest or folder) with ``cfg.objective``."""
    classes = study_classes(d)
    train = real_data(d, "train", classes) if data == "real" else synthetic_data(data, classes, fraction, d.store_size)
    if fraction < 1.0 and cfg.train.max_steps is None:
        # a share of the set trains for as many optimizer steps as the whole set: set size, not budget, varies
        full = round(len(train) / fraction * (1 - cfg.val_fraction))
        per_epoch = steps_per_epoch(full, cfg.train.batch_size, cfg.train.gradient_accumulation)
        cfg = replace(cfg, train=replace(cfg.train, max_steps=cfg.train.epochs * per_epoch))
    teacher = load_classifier_model(teacher_dir) if cfg.objective == "kd" else None
    if teacher is not None and list(teacher.config.id2label.values()) != classes:
        raise KDError(f"{name}: the teacher in {teacher_dir} knows classes {list(teacher.config.id2label.values())}, "
                      f"the study has {classes}; retrain the teacher")
    key = f"{data}|{fingerprint(data if data != 'real' else d.real)}|{fraction}|{fingerprint(str(teacher_dir)) if teacher_dir else ''}"
    train_classifier(train, real_data(d, "test", classes), *out, cfg, teacher, name=name, run_key=key)


def study_data(section: dict, real: str, grammar: str | None) -> DMKDData:
    """The study's data from the ``classifier_kd`` config section and the resolved real-data path."""
    return DMKDData(real=real, labels=tuple(section.get("labels", ("shape",))), grammar=grammar,
                    classes=tuple(section["classes"]) if section.get("classes") else None,
                    store_size=section.get("store_size"))


def run_config(section: dict, role: str, seed: int, objective: str = "kd") -> ClassifierKDConfig:
    """The ``ClassifierKDConfig`` of the teacher (``role="teacher"``) or of a student, from the config section."""
    model = build(ClassifierModelConfig, section.get(role, {}), image_size=section.get("image_size", 32))
    train = build(TrainConfig, section.get(f"{role}_train", {}), seed=seed, monitor="accuracy", monitor_mode="max",
                  restore_best=True)
    robust = section.get("teacher_robustness", {}) if role == "teacher" else {}
    return build(ClassifierKDConfig, section, objective=objective, model=model, train=train,
                 augment_blur=robust.get("blur", 0.0), augment_noise=robust.get("noise", 0.0))
