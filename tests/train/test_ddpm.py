"""The DDPM teacher (pixel and latent) on a CIFAR-layout folder made by the test; the folder checks."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDPMPipeline
from PIL import Image

from kd_core.errors import KDError
from kd_core.models.loading import is_conditional, is_latent, load_pipeline
from kd_core.models.tiny import tiny_vae
from kd_core.train.ddpm import DDPMConfig, build_ddpm_unet, load_training_images, train_ddpm
from kd_core.train.loop import TrainConfig

from ..conftest import assert_drawn

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
    unet = build_ddpm_unet(TINY)
    assert unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert unet.config.up_block_types == ("AttnUpBlock2D", "UpBlock2D")
    with pytest.raises(KDError, match="one per stage"):
        build_ddpm_unet(DDPMConfig(channels=(8, 16), attention=(True,)))
    with pytest.raises(KDError, match="3 down-samplings do not divide"):
        build_ddpm_unet(DDPMConfig(image_size=12, channels=(8, 8, 8, 8), attention=(False,) * 4, norm_num_groups=8))
    assert build_ddpm_unet(TINY, in_channels=4, sample_size=8).config.in_channels == 4


def test_train_early_stop_best_model_checkpoints_and_samples(tmp_path):
    data = folder(tmp_path / "data", n=10)
    # lr so large the validation loss cannot keep improving: patience 2 stops the run early
    cfg = TrainConfig(epochs=30, batch_size=8, lr=0.05, patience=2, device="cpu", lr_scheduler="constant")
    result = train_ddpm(None, data, tmp_path / "model", tmp_path / "run", TINY, cfg)
    assert result.stopped_early and result.steps < 30 * 2 and result.best_step <= result.steps
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    val = loss[(loss["split"] == "val") & (loss["term"] == "loss")]
    assert len(val) == result.steps // 2 + (result.steps % 2 > 0)  # one evaluation per epoch (2 steps)
    assert val.set_index("step")["value"].idxmin() == result.best_step
    meta = json.loads((tmp_path / "model" / "ddpm.json").read_text())
    assert meta["n_train"] == 16 and meta["n_val"] == 4 and meta["best_step"] == result.best_step  # 2 of 10 per class
    pipe = DDPMPipeline.from_pretrained(tmp_path / "model")
    assert type(pipe.unet).__name__ == "UNet2DModel" and pipe.scheduler.config.clip_sample
    assert_drawn(tmp_path / "model" / "samples.png", (4 * 16, 16))  # n_samples 4: one row
    # the best model, not the last, was saved: its validation loss is the best one recorded
    assert meta["best_val_loss"] == pytest.approx(val["value"].min())


def test_latent_ddpm_trains_on_a_frozen_autoencoder(tmp_path):
    data = folder(tmp_path / "data", n=10)
    torch.manual_seed(0)
    vae = tiny_vae()  # 2 stages: 2 pixels per latent, 4 latent channels
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, device="cpu", lr_scheduler="constant")
    result = train_ddpm(str(tmp_path / "vae"), data, tmp_path / "model", tmp_path / "run", TINY, cfg)
    assert result.steps == 4 and result.best_step is not None
    meta = json.loads((tmp_path / "model" / "ddpm.json").read_text())
    assert meta["space"] == "latent" and meta["vae"] == str(tmp_path / "vae")
    pipe = load_pipeline(str(tmp_path / "model"), torch.device("cpu"), torch.float32)
    assert type(pipe).__name__ == "LDMPipeline" and is_latent(pipe) and not is_conditional(pipe)
    assert pipe.unet.config.in_channels == 4 and pipe.unet.config.sample_size == 8  # 16 px / 2
    assert not pipe.scheduler.config.clip_sample and type(pipe.scheduler).__name__ == "DDIMScheduler"
    # the autoencoder was frozen: saved unchanged
    assert all(torch.equal(before[k], v) for k, v in pipe.vqvae.state_dict().items())
    assert_drawn(tmp_path / "model" / "samples.png", (4 * 16, 16))
    a = pipe(batch_size=2, generator=[torch.Generator().manual_seed(i) for i in range(2)], num_inference_steps=2,
             output_type="np").images
    b = pipe(batch_size=2, generator=[torch.Generator().manual_seed(i) for i in range(2)], num_inference_steps=2,
             output_type="np").images
    assert a.shape == (2, 16, 16, 3) and np.array_equal(a, b)  # seeded: reproducible
    with pytest.raises(KDError, match="cannot seed the step noise of 'ddpm'"):
        load_pipeline(str(tmp_path / "model"), torch.device("cpu"), torch.float32, scheduler="ddpm")
    # a caller that seeds every step itself (the trajectory analysis) may use it
    assert load_pipeline(str(tmp_path / "model"), torch.device("cpu"), torch.float32, scheduler="ddpm",
                         seeded_steps=True).scheduler.config.clip_sample is False
    with pytest.raises(KDError, match="samples in fp32 only"):
        load_pipeline(str(tmp_path / "model"), torch.device("cpu"), torch.bfloat16)
    # a pipeline folder's vae/ is found
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "vqvae").rename(tmp_path / "pipe" / "vae")
    train_ddpm(str(tmp_path / "pipe"), data, tmp_path / "model2", tmp_path / "run2", TINY, replace(cfg, epochs=1))
    assert json.loads((tmp_path / "model2" / "ddpm.json").read_text())["steps"] == 2


def test_latent_ddpm_refuses_bad_autoencoders(tmp_path):
    data = folder(tmp_path / "data", n=4)
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu")
    with pytest.raises(KDError, match="'ddpm_teacher.vae': local path .* does not exist"):
        train_ddpm(str(tmp_path / "nowhere"), data, tmp_path / "m", tmp_path / "r", TINY, cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDError, match="cannot be loaded"):
        train_ddpm(str(tmp_path / "empty"), data, tmp_path / "m", tmp_path / "r", TINY, cfg)
    vae = tiny_vae()
    vae.register_to_config(shift_factor=0.1)
    vae.save_pretrained(tmp_path / "shifted")
    with pytest.raises(KDError, match="shift_factor"):
        train_ddpm(str(tmp_path / "shifted"), data, tmp_path / "m", tmp_path / "r", TINY, cfg)
    tiny_vae().save_pretrained(tmp_path / "vae")
    with pytest.raises(KDError, match="image_size 15 is not a multiple of the autoencoder's 2 pixels"):
        train_ddpm(str(tmp_path / "vae"), folder(tmp_path / "odd", n=4, size=15), tmp_path / "m", tmp_path / "r",
                   replace(TINY, image_size=15), cfg)
    assert not (tmp_path / "m").exists()
