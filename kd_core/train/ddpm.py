"""A pixel-space DDPM teacher trained from scratch (Ho et al. 2020, "Denoising Diffusion
Probabilistic Models"): the teacher of the model-size study on CIFAR-10 or MNIST.

The images come from a local folder (``<folder>/<class>/<image>``, verified before training:
count, one size, every file readable) and are held in memory as uint8. A ``UNet2DModel`` learns
epsilon prediction on the linear beta schedule with random horizontal flips, through the shared
training loop: a seeded validation split (a share of every class), the validation loss (fixed
noise and timesteps, so evaluations compare) once per epoch, early stopping with a patience,
the best model on that loss restored at the end, and resumable checkpoints every N epochs. The
result is a ``DDPMPipeline`` folder (``from_pretrained`` loads it) with ``ddpm.json`` and a grid of
samples from the best model.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from kd_core.errors import KDError
from kd_core.image_folder import read_uint8, scan_image_folder
from kd_core.io import atomic_dir, atomic_path, write_json
from kd_core.models.bk_sdm import count_parameters
from kd_core.seeding import resolve_device
from kd_core.train.classifier_kd import LabelledImages, split_validation
from kd_core.train.loop import TrainConfig, Trainer, TrainResult


@dataclass(frozen=True)
class DDPMConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (64, 128, 256, 256)
    attention: tuple[bool, ...] = (False, True, False, False)  # self-attention per stage (DDPM: at 16 px)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    attention_head_dim: int = 8  # width of one attention head
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    classes: tuple[str, ...] | None = None  # class folders to use; None: all
    max_images: int | None = None  # the first N (seeded shuffle) of the folder; None: all
    val_fraction: float = 0.05
    checkpoint_every_epochs: int = 5
    flip: bool = True
    n_samples: int = 16
    sample_steps: int = 50


def build_pixel_unet(cfg: DDPMConfig, in_channels: int = 3) -> UNet2DModel:
    if len(cfg.attention) != len(cfg.channels):
        raise KDError(f"ddpm.attention has {len(cfg.attention)} entries for {len(cfg.channels)} stages; give one per stage")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(sample_size=cfg.image_size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=tuple(cfg.channels), down_block_types=down, up_block_types=up,
                       layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_num_groups,
                       attention_head_dim=cfg.attention_head_dim)


def load_training_images(folder: str | Path, cfg: DDPMConfig, seed: int = 0) -> LabelledImages:
    """The folder's images as uint8 (N, 3, S, S) with their class labels, verified first; resized
    to ``cfg.image_size`` if needed."""
    found = scan_image_folder(folder, list(cfg.classes) if cfg.classes else None)
    keep = np.arange(len(found.files))
    if cfg.max_images and len(keep) > cfg.max_images:
        keep = np.sort(np.random.default_rng(seed).permutation(len(keep))[: cfg.max_images])
    if len(keep) < 2:
        raise KDError(f"image folder {folder} has {len(keep)} image(s); a DDPM needs at least 2 (train and validation)")
    images = read_uint8([found.files[i] for i in keep], None if found.size == (cfg.image_size, cfg.image_size) else cfg.image_size)
    return LabelledImages(images, torch.tensor([found.labels[i] for i in keep]), found.classes)


def save_sample_grid(images: list[Image.Image], path: str | Path, cols: int = 8) -> None:
    w, h = images[0].size
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    with atomic_path(path, suffix=".png") as tmp:
        grid.save(tmp, format="PNG")


def train_pixel_ddpm(folder: str | Path, out_dir: str | Path, run_dir: str | Path, cfg: DDPMConfig,
                     train: TrainConfig) -> TrainResult:
    """Train a pixel DDPM on ``folder``; write the best model as a ``DDPMPipeline`` folder and samples."""
    run_dir = Path(run_dir)
    device = resolve_device(train.device)
    data = load_training_images(folder, cfg, train.seed)
    train_part, val_part = split_validation(data, cfg.val_fraction, train.seed)
    if len(val_part) == 0 or len(train_part) == 0:
        val_part, train_part = data.subset(torch.arange(1)), data.subset(torch.arange(1, len(data)))  # one image per class
    images = torch.cat([train_part.images, val_part.images])
    n, n_val = len(images), len(val_part)
    train_ids, val_ids = torch.arange(n - n_val), torch.arange(n - n_val, n)
    unet = build_pixel_unet(cfg).to(device)
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, clip_sample=True)
    model: dict[str, torch.nn.Module] = {"unet": unet}

    def as_float(ids: torch.Tensor) -> torch.Tensor:
        return images[ids].float() / 127.5 - 1

    def terms(x0: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (len(x0),), generator=gen)
        pred = model["unet"](sched.add_noise(x0, noise, t).to(device), t.to(device)).sample
        task = F.mse_loss(pred.float(), noise.to(device))
        return {"loss": task, "task": task}

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = as_float(train_ids[idx])
        if cfg.flip:
            mirror = torch.rand(len(x0), generator=gen) < 0.5
            x0 = torch.where(mirror.view(-1, 1, 1, 1), x0.flip(-1), x0)
        return terms(x0, gen)

    def val_fn() -> dict[str, float]:
        chunks = range(0, n_val, 64)
        total = 0.0
        with torch.no_grad():
            for i in chunks:
                ids = val_ids[i : i + 64]
                total += float(terms(as_float(ids), torch.Generator().manual_seed(train.seed + 777 + i))["loss"]) * len(ids)
        return {"loss": total / n_val}

    n_train = len(train_ids)  # an epoch as the shared loop counts it
    steps_per_epoch = max(1, (n_train // max(1, min(train.batch_size, n_train))) // train.gradient_accumulation)
    train = replace(train, checkpoint_every=cfg.checkpoint_every_epochs * steps_per_epoch, monitor="loss",
                    monitor_mode="min", restore_best=True)
    key = hashlib.sha256(json.dumps({"folder": str(folder), "n": n, "ddpm": asdict(cfg),
                                     "pixels": hashlib.sha256(images.numpy().tobytes()).hexdigest()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    trainer = Trainer(unet, loss_fn, len(train_ids), run_dir, train, val_fn=val_fn, name="ddpm teacher", run_key=key)
    model["unet"] = trainer.model
    result = trainer.fit()
    best = trainer.accelerator.unwrap_model(trainer.model).eval()
    if trainer.accelerator.is_main_process:
        pipe = DDPMPipeline(unet=best, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        gens = [torch.Generator("cpu").manual_seed(train.seed + i) for i in range(cfg.n_samples)]
        samples = pipe(batch_size=cfg.n_samples, generator=gens, num_inference_steps=cfg.sample_steps).images
        with atomic_dir(out_dir) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            save_sample_grid(samples, tmp / "samples.png")
            write_json(tmp / "ddpm.json", {"folder": str(folder), "ddpm": asdict(cfg), "train": asdict(train),
                                           "n_train": len(train_ids), "n_val": n_val, "params": count_parameters(best),
                                           "steps": result.steps, "best_step": result.best_step,
                                           "best_val_loss": result.best_val, "stopped_early": result.stopped_early})
    return result
