import json

import pandas as pd
import pytest
import torch
from diffusers import DiffusionPipeline

from kd_core.captions import DataConfig
from kd_core.train.loop import TrainConfig
from kd_core.train.size_study import SizeStudyConfig, train_width_student

from ..conftest import assert_drawn, random_image_manifest


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return random_image_manifest(tmp_path_factory.mktemp("images"), 6)


def test_width_student_trains_saves_and_samples(tiny_sd15, images, tmp_path):
    teacher_cfg = json.loads((tiny_sd15 / "unet" / "config.json").read_text())
    result = train_width_student(str(tiny_sd15), DataConfig(source=str(images)), tmp_path / "model", tmp_path / "run",
                                 SizeStudyConfig(factor=0.5, val_fraction=0.34),
                                 TrainConfig(max_steps=2, batch_size=2, device="cpu", checkpoint_every=1, lr=1e-3))
    assert result.steps == 2
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    assert {"task", "out_kd", "loss"} <= set(loss["term"]) and "val" in set(loss["split"])
    last = loss[(loss["split"] == "train") & (loss["step"] == 2)].set_index("term")["value"]
    assert last["loss"] == pytest.approx(last["task"] + last["out_kd"], rel=1e-5)  # no feature term
    unet_cfg = json.loads((tmp_path / "model" / "unet" / "config.json").read_text())
    assert unet_cfg["block_out_channels"] == [c // 2 for c in teacher_cfg["block_out_channels"]]
    assert unet_cfg["layers_per_block"] == teacher_cfg["layers_per_block"]
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "model")
    image = pipe("a small red circle", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert_drawn(image, (64, 64))
    meta = json.loads((tmp_path / "model" / "size_study.json").read_text())
    assert meta["size_study"]["factor"] == 0.5 and meta["params_student"] < meta["params_teacher"] / 2


@pytest.mark.parametrize("init", ["teacher", "random"])
def test_full_width_student_from_the_teacher_starts_as_the_teacher(tiny_sd15, images, tmp_path, init):
    """init: teacher at x1 starts with the teacher's outputs (output-KD term 0 at the first step);
    init: random does not."""
    train_width_student(str(tiny_sd15), DataConfig(source=str(images)), tmp_path / "model", tmp_path / "run",
                        SizeStudyConfig(factor=1.0, init=init, val_fraction=0.34),
                        TrainConfig(max_steps=1, batch_size=2, device="cpu", lr=1e-3))
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    first = loss[(loss["split"] == "train") & (loss["step"] == 1)].set_index("term")["value"]
    assert (first["out_kd"] < 1e-12) == (init == "teacher"), first["out_kd"]
