"""Toy text-to-image models of the shapes world, in the standard diffusers / transformers classes.

``pretrain_toy_base`` trains, on the rendered "real" dataset, an ``AutoencoderKL``, and writes a
word-level ``CLIPTokenizer`` over the grammar and a frozen, randomly initialised ``CLIPTextModel``
with the train split's encodings; ``pretrain_toy_unet`` then trains on them a teacher
``UNet2DConditionModel`` or a weaker base student (fewer channels, fewer steps), each saved as a
``StableDiffusionPipeline`` folder that ``DiffusionPipeline.from_pretrained`` loads.

What makes this work on a 2-core CPU in minutes (see DESIGN.md, "the naive way misses"):
- the VAE is trained with an MSE loss (an L1 loss loses the colours) in which shape pixels (those
  that differ from the image's corner, always background in the shapes world) weigh
  ``1 + foreground_weight``: with a plain MSE the small shapes are a few percent of the pixels and
  the VAE sits for hundreds of steps at brown blobs. The KL term is taken per pixel, as in LDM's
  summed losses (a KL summed over latents against a mean pixel MSE is ~3000x too strong and blurs
  everything). The latent scaling factor is measured, as in Stable Diffusion (1 / std of latents);
- latents and text embeddings are computed once, not every step;
- the U-Nets use epsilon prediction with scaled-linear betas, Min-SNR-gamma loss weighting
  (Hang et al., 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"), a one-cycle
  learning rate, EMA weights and 10% prompt dropout for classifier-free guidance;
- every scheduler is saved with ``clip_sample=False``: clipping x0 to [-1, 1] is right for pixels
  and ruinous for latents.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from kd_core.errors import KDError
from kd_core.io import atomic_dir, write_parquet
from kd_core.models.tokenizer import build_clip_tokenizer
from kd_core.prompts import iter_words
from kd_core.seeding import seed_everything
from kd_core.world.dataset import load_split

#: Noise schedule of Stable Diffusion 1.x, with x0 clipping off (latent space).
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                clip_sample=False, prediction_type="epsilon", set_alpha_to_one=False, steps_offset=1)


@dataclass(frozen=True)
class VAEConfig:
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6
    foreground_weight: float = 10.0


@dataclass(frozen=True)
class TextEncoderConfig:
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    max_length: int = 16


@dataclass(frozen=True)
class UNetConfig:
    channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_heads: int = 4
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    ema_decay: float = 0.995
    cond_dropout: float = 0.1
    snr_gamma: float = 5.0


@dataclass(frozen=True)
class ToyConfig:
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    teacher: UNetConfig = field(default_factory=UNetConfig)
    student: UNetConfig = field(default_factory=lambda: UNetConfig(channels=(16, 32), steps=1000))
    grammars: tuple[str, ...] = ("shapes",)
    seed: int = 0


def _groups(c: int) -> int:
    return math.gcd(c, 8)


def build_vae(cfg: VAEConfig, image_size: int) -> AutoencoderKL:
    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, sample_size=image_size,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.channels), layers_per_block=1, norm_num_groups=min(_groups(c) for c in cfg.channels),
    )


def build_unet(cfg: UNetConfig, sample_size: int, in_channels: int, cross_attention_dim: int) -> UNet2DConditionModel:
    n = len(cfg.channels)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=min(_groups(c) for c in cfg.channels), cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.attention_heads,  # diffusers' legacy name: the number of heads
    )


def build_text_encoder(cfg: TextEncoderConfig, vocab_size: int, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    conf = CLIPTextConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=2 * cfg.hidden_size,
                          num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                          max_position_embeddings=cfg.max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                          projection_dim=cfg.hidden_size)
    return CLIPTextModel(conf).eval().requires_grad_(False)


def _log(rows: list[dict], model: str, step: int, **terms: float) -> None:
    rows += [{"model": model, "step": step, "term": k, "value": float(v)} for k, v in terms.items()]


def foreground_mask(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """1 where a pixel differs from its image's top-left corner (the background), else 0."""
    return ((x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > threshold).float()


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    n = max(1, int(warmup * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / n if s < n else 0.5 * (1 + math.cos(math.pi * (s - n) / max(1, steps - n))))


def train_vae(x: torch.Tensor, cfg: VAEConfig, gen: torch.Generator, log: list[dict]) -> AutoencoderKL:
    vae = build_vae(cfg, x.shape[-1]).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, fused=True)
    sched = warmup_cosine(opt, cfg.steps)
    for step in tqdm(range(cfg.steps), desc="toy VAE", mininterval=2):
        xb = x[torch.randint(len(x), (cfg.batch_size,), generator=gen)]
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        sq = (rec - xb) ** 2
        mse = sq.mean()
        weighted = ((1 + cfg.foreground_weight * foreground_mask(xb)) * sq).mean()
        kl = post.kl().mean() / xb[0].numel()
        loss = weighted + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == cfg.steps - 1:
            _log(log, "vae", step, reconstruction_mse=mse.item(), weighted_mse=weighted.item(), kl_per_pixel=kl.item(),
                 total=loss.item())
    return vae.eval().requires_grad_(False)


def train_unet(name: str, latents: tuple[torch.Tensor, torch.Tensor], cond: torch.Tensor, prompt_index: torch.Tensor,
               cfg: UNetConfig, gen: torch.Generator, log: list[dict]) -> UNet2DConditionModel:
    """Epsilon-prediction training with Min-SNR-gamma weights; returns the EMA weights."""
    mean, std = latents
    unet = build_unet(cfg, mean.shape[-1], mean.shape[1], cond.shape[-1]).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    noise_sched = DDPMScheduler(**{k: v for k, v in SCHEDULE.items() if k != "set_alpha_to_one"})
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-2, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    empty = cond[-1]
    params, ema_params = list(unet.parameters()), list(ema.parameters())
    for step in tqdm(range(cfg.steps), desc=f"toy {name} U-Net", mininterval=2):
        idx = torch.randint(len(mean), (cfg.batch_size,), generator=gen)
        z0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        c = cond[prompt_index[idx]]
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
        c = torch.where(drop[:, None, None], empty.expand_as(c), c)
        pred = unet(noise_sched.add_noise(z0, noise, t), t, encoder_hidden_states=c).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        weights = torch.clamp(snr[t], max=cfg.snr_gamma) / snr[t]
        loss = (weights * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        if step % 20 == 0 or step == cfg.steps - 1:
            _log(log, name, step, task_mse=per_sample.mean().item(), min_snr_weighted=loss.item())
    return ema


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def save_pipeline(out_dir: str | Path, **components) -> None:
    """Save a ``StableDiffusionPipeline`` folder atomically (temporary folder, then rename)."""
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)


LOSS_SCHEMA = pa.schema([("model", pa.string()), ("step", pa.int64()), ("term", pa.string()), ("value", pa.float64())])
#: What the toy U-Nets train on, beside the shared components in the base folder.
ENCODINGS = "train_encodings.safetensors"
ROLES = ("teacher", "student")


def pretrain_toy_base(data_table: str | Path, out_dir: str | Path, loss_path: str | Path, cfg: ToyConfig) -> float:
    """Train the VAE on the real train split; write it with the tokenizer, the frozen text encoder and
    the scheduler (each in its diffusers / transformers folder) and the train split's encodings (the
    scaled latent posteriors and the prompt embeddings) that both U-Nets train on. Returns seconds."""
    gen = seed_everything(cfg.seed)
    df, x = load_split(data_table, "train")
    log: list[dict] = []
    t0 = time.perf_counter()
    vae = train_vae(x, cfg.vae, gen, log)
    with torch.no_grad():
        dist = [vae.encode(x[i : i + 256]).latent_dist for i in range(0, len(x), 256)]
        mean, std = torch.cat([d.mean for d in dist]), torch.cat([d.std for d in dist])
    scale = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scale)

    tokenizer = build_clip_tokenizer(iter_words(list(cfg.grammars)), cfg.text.max_length)
    text_encoder = build_text_encoder(cfg.text, len(tokenizer), cfg.seed)
    prompts = sorted(df["prompt"].unique())
    encodings = {
        "latent_mean": mean * scale, "latent_std": std * scale,
        "prompt_embeds": encode_prompts(tokenizer, text_encoder, prompts + [""]),  # the last: the empty prompt
        "prompt_index": torch.tensor(df["prompt"].map({p: i for i, p in enumerate(prompts)}).to_numpy()),
    }
    seconds = time.perf_counter() - t0
    with atomic_dir(out_dir) as tmp:
        for name, part in (("vae", vae), ("text_encoder", text_encoder), ("tokenizer", tokenizer),
                           ("scheduler", DDIMScheduler(**SCHEDULE))):
            part.save_pretrained(tmp / name)
        save_file({k: v.contiguous() for k, v in encodings.items()}, tmp / ENCODINGS)
    write_parquet(pd.DataFrame(log), loss_path, LOSS_SCHEMA, "world/toy_loss",
                  {"config": asdict(cfg.vae), "scaling_factor": scale, "wall_time_s": seconds})
    return seconds


def pretrain_toy_unet(base_dir: str | Path, role: str, out_dir: str | Path, loss_path: str | Path,
                      cfg: ToyConfig) -> float:
    """Train the ``role`` U-Net (``teacher`` or ``student``) on the base folder's encodings and save
    it with the base components as a ``StableDiffusionPipeline`` folder. Returns seconds."""
    if role not in ROLES:
        raise KDError(f"toy U-Net role {role!r}; choose one of {', '.join(ROLES)}")
    base = Path(base_dir)
    enc = load_file(base / ENCODINGS)
    gen = seed_everything(cfg.seed + 1 + ROLES.index(role))  # the two U-Nets draw independent batches
    log: list[dict] = []
    t0 = time.perf_counter()
    unet = train_unet(role, (enc["latent_mean"], enc["latent_std"]), enc["prompt_embeds"], enc["prompt_index"],
                      getattr(cfg, role), gen, log)
    seconds = time.perf_counter() - t0
    save_pipeline(out_dir, vae=AutoencoderKL.from_pretrained(base / "vae"),
                  text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder"),
                  tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer"), unet=unet,
                  scheduler=DDIMScheduler.from_pretrained(base / "scheduler"))
    write_parquet(pd.DataFrame(log), loss_path, LOSS_SCHEMA, "world/toy_loss",
                  {"config": asdict(getattr(cfg, role)), "wall_time_s": seconds})
    return seconds


def pretrain_toy_models(data_table: str | Path, base_dir: str | Path, teacher_dir: str | Path,
                        student_dir: str | Path, loss_dir: str | Path, cfg: ToyConfig) -> dict[str, float]:
    """The three steps in one call (the workflow runs them as three jobs, the U-Nets side by side):
    the base folder, then the teacher and the student. Loss tables ``<loss_dir>/{vae,teacher,student}.parquet``."""
    loss_dir = Path(loss_dir)
    times = {"vae_s": pretrain_toy_base(data_table, base_dir, loss_dir / "vae.parquet", cfg)}
    for role, out in (("teacher", teacher_dir), ("student", student_dir)):
        times[f"{role}_s"] = pretrain_toy_unet(base_dir, role, out, loss_dir / f"{role}.parquet", cfg)
    return times
