"""The pixel DDPM teacher on a CIFAR-layout folder made by the test; the folder checks."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDPMPipeline
from PIL import Image

from kd_core.errors import KDError
from kd_core.train.ddpm import DDPMConfig, build_pixel_unet, load_training_images, train_pixel_ddpm
from kd_core.train.loop import TrainConfig

TINY = DDPMConfig(image_size=16, channels=(16, 32), attention=(False, True), layers_per_block=1, norm_num_groups=8,
                  num_train_timesteps=100, val_fraction=0.2, checkpoint_every_epochs=1, n_samples=4, sample_steps=3)


def folder(root, n=6, size=16, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_folder_is_checked(tmp_path):
    x = load_training_images(folder(tmp_path / "ok"), TINY)
    assert x.images.shape == (12, 3, 16, 16) and x.images.dtype == torch.uint8 and x.labels.tolist() == [0] * 6 + [1] * 6
    assert load_training_images(tmp_path / "ok", DDPMConfig(image_size=8)).images.shape == (12, 3, 8, 8)  # resized
    assert len(load_training_images(tmp_path / "ok", DDPMConfig(image_size=16, max_images=5))) == 5
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(KDError, match="holds no images"):
        load_training_images(tmp_path / "empty", TINY)
    bad = folder(tmp_path / "bad")
    (bad / "cat" / "9.png").write_bytes(b"not a png")
    with pytest.raises(KDError, match=r"unreadable image .*9\.png"):
        load_training_images(bad, TINY)
    mixed = folder(tmp_path / "mixed")
    Image.new("RGB", (20, 20)).save(mixed / "dog" / "big.png")
    with pytest.raises(KDError, match="mixes image sizes"):
        load_training_images(mixed, TINY)
    with pytest.raises(KDError, match="does not exist"):
        load_training_images(tmp_path / "nowhere", TINY)


def test_unet_layout():
    unet = build_pixel_unet(TINY)
    assert unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert unet.config.up_block_types == ("AttnUpBlock2D", "UpBlock2D")
    with pytest.raises(KDError, match="one per stage"):
        build_pixel_unet(DDPMConfig(channels=(8, 16), attention=(True,)))


def test_train_early_stop_best_model_checkpoints_and_samples(tmp_path):
    data = folder(tmp_path / "data", n=10)
    # lr so large the validation loss cannot keep improving: patience 2 stops the run early
    cfg = TrainConfig(epochs=30, batch_size=8, lr=0.05, patience=2, device="cpu", lr_scheduler="constant")
    result = train_pixel_ddpm(data, tmp_path / "model", tmp_path / "run", TINY, cfg)
    assert result.stopped_early and result.steps < 30 * 2 and result.best_step <= result.steps
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    val = loss[(loss["split"] == "val") & (loss["term"] == "loss")]
    assert len(val) == result.steps // 2 + (result.steps % 2 > 0)  # one evaluation per epoch (2 steps)
    assert val.set_index("step")["value"].idxmin() == result.best_step
    meta = json.loads((tmp_path / "model" / "ddpm.json").read_text())
    assert meta["n_train"] == 16 and meta["n_val"] == 4 and meta["best_step"] == result.best_step  # 2 of 10 per class
    pipe = DDPMPipeline.from_pretrained(tmp_path / "model")
    assert type(pipe.unet).__name__ == "UNet2DModel" and pipe.scheduler.config.clip_sample
    assert Image.open(tmp_path / "model" / "samples.png").size == (8 * 16, 16)
    # the best model, not the last, was saved: its validation loss is the best one recorded
    assert meta["best_val_loss"] == pytest.approx(val["value"].min())
