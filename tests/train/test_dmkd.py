"""The DM-KD study's runs on a CIFAR-layout folder made by the test (train/<class>/, test/<class>/)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kd_core.config import validate_config
from kd_core.errors import KDError
from kd_core.train.dmkd import (
    DMKDData,
    RunPaths,
    run_config,
    study_classes,
    synthetic_data,
    train_config,
    train_student,
    train_teacher,
)
from kd_core.world.render import render

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def cifar_like(root, n_train=60, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for shape in ("circle", "square"):
            (root / split / shape).mkdir(parents=True)
            for i in range(n):
                attrs = {"shape": shape, "colour": rng.choice(["red", "blue"]), "background": rng.choice(["white", "black"])}
                render(attrs, 32, rng).save(root / split / shape / f"{i:04d}.png")
    return root


def paths(root, name):
    return RunPaths(root / "models" / name, root / "train" / name, root / "metrics" / f"{name}.parquet")


def section(**kw):
    cfg = validate_config({"dmkd": {
        "enabled": True, "teacher": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
        "student": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
        "teacher_train": {"epochs": 25, "batch_size": 16, "lr": 0.003, "device": "cpu"},
        "student_train": {"epochs": 25, "batch_size": 16, "lr": 0.003, "optimizer": "adamw", "device": "cpu"}, **kw}},
        SCHEMA)
    return cfg["dmkd"]


def test_config_section_builds_run_configs():
    sec = section()
    student, train = run_config(sec, "student", objective="kd"), train_config(sec, "student", seed=3)
    assert student.temperature == 10.0 and train.monitor == "accuracy" and train.restore_best
    assert student.model.hidden_sizes == (8, 16) and train.seed == 3 and train.optimizer == "adamw"
    # DM-KD's recipe: SGD lr 0.05, momentum 0.9, weight decay 5e-4, decay at 50% and 80% of 50 epochs
    t = train_config(validate_config({}, SCHEMA)["dmkd"], "student", seed=0)
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.epochs, t.lr_scheduler, t.milestones) == (
        "sgd", 0.05, 0.9, 5e-4, 50, "multistep", (0.5, 0.8))
    assert train_config(validate_config({}, SCHEMA)["dmkd"], "teacher", 0).epochs == 15
    robust = section(teacher_robustness={"blur": 0.5, "noise": 0.05})
    assert (run_config(robust, "teacher").augment_blur, run_config(robust, "teacher").augment_noise) == (0.5, 0.05)
    assert run_config(robust, "student").augment_blur == 0.0  # students see their images as they are


def test_teacher_then_students_from_a_real_folder(tmp_path):
    real = cifar_like(tmp_path / "cifar")
    synthetic = cifar_like(tmp_path / "synthetic", n_train=60, n_test=1, seed=5) / "train"
    data = DMKDData(real=str(real), grammar=None)
    assert study_classes(data) == ["circle", "square"]
    sec = section()
    result = train_teacher(None, data, paths(tmp_path, "teacher"), run_config(sec, "teacher", "ce"), train_config(sec, "teacher", 0))
    assert result.steps > 0 and result.best_step is not None
    teacher_acc = pd.read_parquet(tmp_path / "metrics" / "teacher.parquet")["correct"].mean()
    assert teacher_acc >= 0.9
    student = train_config(sec, "student", 0)
    train_student(tmp_path / "models" / "teacher", replace(data, images=str(synthetic)), paths(tmp_path, "kd"),
                  run_config(sec, "student", "kd"), student)
    train_student(None, data, paths(tmp_path, "real"), run_config(sec, "student", "ce"), student)
    for run in ("kd", "real"):
        pred = pd.read_parquet(tmp_path / "metrics" / f"{run}.parquet")
        assert len(pred) == 20 and pred["correct"].mean() >= 0.8, run
    assert len(synthetic_data(str(synthetic), ["circle", "square"], fraction=0.5)) == 60
    # a teacher of other classes is refused
    with pytest.raises(KDError, match="retrain the teacher"):
        train_student(tmp_path / "models" / "teacher", DMKDData(real=str(real), grammar=None, classes=("square", "circle")),
                      paths(tmp_path, "x"), run_config(sec, "student", "kd"), student)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(real / "test" / "circle" / "small.png")
    with pytest.raises(KDError, match="mixes image sizes"):
        train_student(None, data, paths(tmp_path, "y"), run_config(sec, "student", "ce"), student)
