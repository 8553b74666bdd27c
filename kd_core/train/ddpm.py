"""A DDPM teacher trained from scratch (Ho et al. 2020, "Denoising Diffusion Probabilistic
Models"), in pixel space or, given a frozen autoencoder, in its latent space (Rombach et al. 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models"): the teacher of the model-size
study on CIFAR-10 or MNIST.

The images come from a local folder (``<folder>/<class>/<image>``, verified before training:
count, one size, every file readable) and are held in memory as uint8; a latent DDPM encodes them
once (posterior mean and std, times the autoencoder's scaling factor; mirrored copies too when
flipping) and draws z0 from the posterior at every step. A ``UNet2DModel`` learns epsilon
prediction on the linear beta schedule with random horizontal flips, through the shared training
loop: a seeded validation split (a share of every class), the validation loss (fixed noise and
timesteps, so evaluations compare) once per epoch, early stopping with a patience, the best model
on that loss restored at the end, and resumable checkpoints every N epochs. The result is a
``DDPMPipeline`` folder (pixels) or an ``LDMPipeline`` folder whose ``vqvae`` is the KL autoencoder
(latents), both stock diffusers classes that ``from_pretrained`` loads, with ``ddpm.json`` and a
grid of samples from the best model.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    LDMPipeline,
    UNet2DModel,
)
from PIL import Image
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.image_folder import LabelledImages, read_uint8, scan_image_folder, split_validation
from kd_core.io import atomic_dir, atomic_path, write_json
from kd_core.models.integrity import check_model_component
from kd_core.models.params import count_parameters
from kd_core.seeding import resolve_device
from kd_core.sources import check_source, fingerprint, is_local, local_path
from kd_core.train.diffusion import Diffusion, Noised, sample_posterior
from kd_core.train.loop import (
    VAL_SEED,
    Batch,
    TrainConfig,
    Trainer,
    TrainResult,
    chunked_mean,
    run_key,
    steps_per_epoch,
)


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


def build_ddpm_unet(cfg: DDPMConfig, in_channels: int = 3, sample_size: int | None = None) -> UNet2DModel:
    """The DDPM U-Net: ``in_channels`` 3 and ``cfg.image_size`` for pixels, the latent channels and
    size for a latent DDPM."""
    if len(cfg.attention) != len(cfg.channels):
        raise KDError(f"ddpm.attention has {len(cfg.attention)} entries for {len(cfg.channels)} stages; give one per stage")
    size = sample_size or cfg.image_size
    if size % 2 ** (len(cfg.channels) - 1):
        raise KDError(f"the DDPM's input is {size} px wide, which {len(cfg.channels) - 1} down-samplings do not divide; "
                      "change ddpm_teacher.model.image_size or the number of channels entries")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(sample_size=size, in_channels=in_channels, out_channels=in_channels,
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


def load_autoencoder(source: str, device: torch.device) -> AutoencoderKL:
    """A frozen KL autoencoder (SD-style VAE) from an ``AutoencoderKL`` folder or hub id, or from a
    pipeline's ``vae/`` (``vqvae/``) subfolder; safetensors only."""
    check_source(source, "ddpm_teacher.vae")
    path = local_path(source)
    subs = [s for s in ("vae", "vqvae") if (Path(path) / s / "config.json").is_file()] or [None, "vae", "vqvae"]
    error = ""
    for sub in subs:
        try:
            config = AutoencoderKL.load_config(path, subfolder=sub)
        except (OSError, ValueError) as exc:
            error = str(exc).splitlines()[0]
            continue
        if config.get("_class_name") != "AutoencoderKL":
            raise KDError(f"ddpm_teacher.vae {source!r} is a {config.get('_class_name')}; a latent DDPM needs an AutoencoderKL")
        if config.get("shift_factor"):
            raise KDError(f"ddpm_teacher.vae {source!r} has a shift_factor, which LDMPipeline does not apply; "
                          "use an SD 1.x / SDXL-style VAE")
        if is_local(source):
            check_model_component(Path(path) / sub if sub else Path(path), "ddpm_teacher.vae")
        try:
            vae = AutoencoderKL.from_pretrained(path, subfolder=sub, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise KDError(f"ddpm_teacher.vae {source!r} cannot be loaded: {str(exc).splitlines()[0]} "
                          "(weights are read from safetensors only)") from None
        return vae.to(device).eval().requires_grad_(False)
    raise KDError(f"ddpm_teacher.vae {source!r} cannot be loaded: {error} "
                  "(give an AutoencoderKL folder, a pipeline folder with vae/, or a hub id in the Hugging Face cache)")


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of uint8 images, times the scaling factor (the latents the U-Net sees)."""
    scale, means, stds = vae.config.scaling_factor, [], []
    for i in tqdm(range(0, len(images), batch_size), desc="encode images", mininterval=2):
        x = images[i : i + batch_size].to(vae.device, torch.float32) / 127.5 - 1
        dist = vae.encode(x).latent_dist
        means.append((dist.mean * scale).float().cpu())
        stds.append((dist.std * scale).float().cpu())
    return torch.cat(means), torch.cat(stds)


def save_sample_grid(images: list[Image.Image], path: str | Path, cols: int = 8) -> None:
    w, h = images[0].size
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    with atomic_path(path, suffix=".png") as tmp:
        grid.save(tmp, format="PNG")


class CleanInputs:
    """The clean inputs x0 of a DDPM: images in [-1, 1] (pixel space), or draws from the frozen
    autoencoder's posteriors, encoded once (latent space; mirrored copies too when flipping)."""

    def __init__(self, images: torch.Tensor, autoencoder: AutoencoderKL | None, flip: bool):
        self.pixels = images if autoencoder is None else None  # uint8, made float and flipped per batch
        self.latents = {}
        if autoencoder is not None:
            self.latents[False] = encode_images(autoencoder, images)
            if flip:
                self.latents[True] = encode_images(autoencoder, images.flip(-1))

    def __call__(self, ids: torch.Tensor, mirror: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """x0 of images ``ids`` (``mirror``: which to flip; None: none)."""
        if self.pixels is not None:
            x0 = self.pixels[ids].float() / 127.5 - 1
            return x0 if mirror is None else torch.where(mirror.view(-1, 1, 1, 1), x0.flip(-1), x0)
        (mean, std), flipped = self.latents[False], self.latents.get(True)
        mean, std = mean[ids], std[ids]
        if mirror is not None:
            m = mirror.view(-1, 1, 1, 1)
            mean, std = torch.where(m, flipped[0][ids], mean), torch.where(m, flipped[1][ids], std)
        return sample_posterior(mean, std, gen)


def _split(data: LabelledImages, cfg: DDPMConfig, seed: int) -> tuple[torch.Tensor, int]:
    """The images, training ones first, and the number of validation images at the end (a
    class-stratified share; one image when the share rounds to none)."""
    train_part, val_part = split_validation(data, cfg.val_fraction, seed)
    if len(val_part) == 0 or len(train_part) == 0:
        val_part, train_part = data.subset(torch.arange(1)), data.subset(torch.arange(1, len(data)))
    return torch.cat([train_part.images, val_part.images]), len(val_part)


def _unet_for(cfg: DDPMConfig, autoencoder: AutoencoderKL | None) -> UNet2DModel:
    if autoencoder is None:
        return build_ddpm_unet(cfg)
    scale = 2 ** (len(autoencoder.config.block_out_channels) - 1)
    if cfg.image_size % scale:
        raise KDError(f"ddpm_teacher.model.image_size {cfg.image_size} is not a multiple of the autoencoder's "
                      f"{scale} pixels per latent; change the image size")
    return build_ddpm_unet(cfg, autoencoder.config.latent_channels, cfg.image_size // scale)


def _save_ddpm(out_dir: str | Path, unet: UNet2DModel, sched: DDPMScheduler, autoencoder: AutoencoderKL | None,
               cfg: DDPMConfig, seed: int, device: torch.device, info: dict) -> None:
    """The pipeline folder (``DDPMPipeline`` / ``LDMPipeline``), a grid of samples and ``ddpm.json``, atomically."""
    if autoencoder is None:
        pipe = DDPMPipeline(unet=unet, scheduler=sched)
    else:
        # DDIM by default: LDMPipeline does not hand its generator to a stochastic sampler's step
        pipe = LDMPipeline(vqvae=autoencoder.to(device), unet=unet, scheduler=DDIMScheduler.from_config(sched.config))
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(cfg.n_samples)]
    samples = pipe(batch_size=cfg.n_samples, generator=gens, num_inference_steps=cfg.sample_steps).images
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        save_sample_grid(samples, tmp / "samples.png")
        write_json(tmp / "ddpm.json", {**info, "params": count_parameters(unet)})


def train_ddpm(vae: str | None, folder: str | Path, out_dir: str | Path, run_dir: str | Path, cfg: DDPMConfig,
               train: TrainConfig) -> TrainResult:
    """Train a DDPM on the image ``folder``: in the latent space of the frozen autoencoder ``vae``
    (a source: folder or hub id), or with ``None`` in pixel space. Writes the best model as a ``DDPMPipeline`` (pixels) or
    ``LDMPipeline`` (latents) folder with ``ddpm.json`` and ``samples.png``."""
    device = resolve_device(train.device)
    images, n_val = _split(load_training_images(folder, cfg, train.seed), cfg, train.seed)
    n = len(images)
    train_ids, val_ids = torch.arange(n - n_val), torch.arange(n - n_val, n)
    autoencoder = load_autoencoder(vae, device) if vae else None
    unet = _unet_for(cfg, autoencoder).to(device)
    x0_of = CleanInputs(images, autoencoder, cfg.flip)
    if autoencoder is not None:
        autoencoder.cpu()
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                          clip_sample=autoencoder is None)  # x0 in [-1, 1] holds for pixels, not for latents
    diffusion = Diffusion(sched.config)

    def terms(model: torch.nn.Module, noised: Noised) -> dict[str, torch.Tensor]:
        task, _ = diffusion.loss(model(noised.noisy.to(device), noised.t.to(device)).sample, noised)
        return {"loss": task, "task": task}

    def loss(model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        ids = train_ids[batch.indices]
        mirror = torch.rand(len(ids), generator=gen) < 0.5 if cfg.flip else None
        return terms(model, batch.shard(diffusion.draw(x0_of(ids, mirror, gen), gen)))

    def val_fn(model: torch.nn.Module) -> dict[str, float]:
        val = chunked_mean(lambda ids, gen: terms(model, diffusion.draw(x0_of(ids, None, gen), gen)), val_ids,
                           train.seed + VAL_SEED, chunk=64)
        return {"loss": val["loss"]}

    # checkpoints every N epochs, as the shared loop counts an epoch
    epoch = steps_per_epoch(len(train_ids), train.batch_size, train.gradient_accumulation)
    train = replace(train, checkpoint_every=cfg.checkpoint_every_epochs * epoch, monitor="loss", monitor_mode="min",
                    restore_best=True)
    latent_key = {"vae": vae, "vae_weights": fingerprint(vae)} if vae else {}  # pixel runs keep their old keys
    key = run_key(folder=str(folder), n=n, ddpm=asdict(cfg), **latent_key,
                  pixels=hashlib.sha256(images.numpy().tobytes()).hexdigest())
    trainer = Trainer(unet, loss, len(train_ids), run_dir, train, val_fn=val_fn, name="ddpm teacher", run_key=key)
    result = trainer.fit()
    if trainer.accelerator.is_main_process:
        _save_ddpm(out_dir, trainer.unwrapped.eval(), sched, autoencoder, cfg, train.seed, device, {
            "folder": str(folder), "space": "pixel" if autoencoder is None else "latent", "vae": vae,
            "ddpm": asdict(cfg), "train": asdict(train), "n_train": len(train_ids), "n_val": n_val,
            "steps": result.steps, "best_step": result.best_step, "best_val_loss": result.best_val,
            "stopped_early": result.stopped_early})
    return result
