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

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from kd_core.errors import KDError
from kd_core.io import atomic_dir
from kd_core.models.loading import reset_tokenizers
from kd_core.models.tokenizer import build_clip_tokenizer
from kd_core.prompts import iter_words
from kd_core.seeding import seed_everything
from kd_core.sources import fingerprint
from kd_core.train.data import sdxl_added_cond
from kd_core.train.diffusion import Diffusion, sample_posterior
from kd_core.train.loop import Batch, TrainConfig, Trainer, run_key
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
    checkpoint_every: int = 500


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
    checkpoint_every: int = 500


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


def build_text_encoder(cfg: TextEncoderConfig, vocab_size: int, seed: int,
                       with_projection: bool = False) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A frozen, randomly initialised CLIP text encoder (``with_projection``: SDXL's second one, whose
    projected end-of-text state is the pooled embedding)."""
    torch.manual_seed(seed)
    conf = CLIPTextConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=2 * cfg.hidden_size,
                          num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                          max_position_embeddings=cfg.max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                          projection_dim=cfg.hidden_size)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(conf).eval().requires_grad_(False)


def foreground_mask(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """1 where a pixel differs from its image's top-left corner (the background), else 0."""
    return ((x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > threshold).float()


def train_vae(x: torch.Tensor, cfg: VAEConfig, run_dir: str | Path, seed: int) -> AutoencoderKL:
    """The VAE on images ``x`` (foreground-weighted MSE + per-pixel KL) on the shared Trainer; 5% warm-up, cosine."""
    torch.manual_seed(seed)
    vae = build_vae(cfg, x.shape[-1]).train()

    def loss(model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        xb = x[batch.local].to(next(model.parameters()).device)
        post = model.encode(xb).latent_dist
        rec = model.decode(post.sample(generator=gen)).sample
        sq = (rec - xb) ** 2
        weighted = ((1 + cfg.foreground_weight * foreground_mask(xb)) * sq).mean()
        kl = post.kl().mean() / xb[0].numel()
        return {"loss": weighted + cfg.kl_weight * kl, "reconstruction_mse": sq.mean(), "weighted_mse": weighted,
                "kl_per_pixel": kl}

    train = TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, lr_scheduler="cosine",
                        warmup_steps=max(1, int(0.05 * cfg.steps)), max_grad_norm=None, seed=seed,
                        checkpoint_every=cfg.checkpoint_every)
    trainer = Trainer(vae, loss, len(x), run_dir, train, name="toy VAE",
                      run_key=run_key(vae=asdict(cfg), images=hashlib.sha256(x.numpy().tobytes()).hexdigest()))
    trainer.fit()
    return trainer.unwrapped.cpu().eval().requires_grad_(False)


def train_unet(name: str, enc: dict[str, torch.Tensor], cfg: UNetConfig, run_dir: str | Path, seed: int,
               key: str, unet: UNet2DConditionModel | None = None, image_size: int | None = None) -> UNet2DConditionModel:
    """Epsilon prediction with Min-SNR-gamma weights and prompt dropout on the shared Trainer
    (one-cycle lr, EMA with diffusers' warm-up); returns the EMA weights.

    ``enc``'s last prompt embedding is the unconditional one that dropped prompts take. An SDXL-style
    ``unet`` (built by the caller) also takes ``enc["pooled_embeds"]`` (its last row: the unconditional
    one) and the size ids of ``image_size`` px images, as its pipeline passes them."""
    mean, std, cond, prompt_index = enc["latent_mean"], enc["latent_std"], enc["prompt_embeds"], enc["prompt_index"]
    pooled = enc.get("pooled_embeds")
    torch.manual_seed(seed)
    unet = (unet if unet is not None else build_unet(cfg, mean.shape[-1], mean.shape[1], cond.shape[-1])).train()
    diffusion = Diffusion({k: v for k, v in SCHEDULE.items() if k != "set_alpha_to_one"}, cfg.snr_gamma)
    empty = cond[-1]

    def loss(model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = batch.indices
        noised = diffusion.draw(sample_posterior(mean[idx], std[idx], gen), gen)
        c = cond[prompt_index[idx]]
        drop = torch.rand(len(idx), generator=gen) < cfg.cond_dropout
        c = batch.shard(torch.where(drop[:, None, None], empty.expand_as(c), c))
        noised = batch.shard(noised)
        device = next(model.parameters()).device
        kw = {}
        if pooled is not None:  # SDXL: the pooled embedding and the size ids
            p = pooled[prompt_index[idx]]
            p = batch.shard(torch.where(drop[:, None], pooled[-1].expand_as(p), p))
            kw["added_cond_kwargs"] = sdxl_added_cond(p, image_size, torch.float32, device)
        pred = model(noised.noisy.to(device), noised.t.to(device), encoder_hidden_states=c.to(device), **kw).sample
        weighted, per = diffusion.loss(pred, noised)
        return {"loss": weighted, "task_mse": per.mean()}

    train = TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, lr_scheduler="onecycle",
                        weight_decay=1e-2, max_grad_norm=1.0, ema_decay=cfg.ema_decay, ema_warmup=True, seed=seed,
                        checkpoint_every=cfg.checkpoint_every)
    trainer = Trainer(unet, loss, len(mean), run_dir, train, name=f"toy {name} U-Net", run_key=key)
    trainer.fit()
    return trainer.unwrapped.cpu().eval().requires_grad_(False)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def save_pipeline(out_dir: str | Path, **components) -> None:
    """Save a ``StableDiffusionPipeline`` folder atomically (temporary folder, then rename)."""
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    reset_tokenizers(pipe)  # the same model, the same bytes, whether or not its tokenizer ran
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)


#: What the toy U-Nets train on, beside the shared components in the base folder.
ENCODINGS = "train_encodings.safetensors"
ROLES = ("teacher", "student")


def pretrain_toy_base(data_table: str | Path, out_dir: str | Path, run_dir: str | Path, cfg: ToyConfig) -> float:
    """Train the VAE on the real train split (checkpoints and ``loss.parquet`` in ``run_dir``); write
    it with the tokenizer, the frozen text encoder and the scheduler (each in its diffusers /
    transformers folder) and the train split's encodings (the scaled latent posteriors and the
    prompt embeddings) that both U-Nets train on. Returns seconds."""
    seed_everything(cfg.seed)
    df, x = load_split(data_table, "train")
    t0 = time.perf_counter()
    vae = train_vae(x, cfg.vae, run_dir, cfg.seed)
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
    reset_tokenizers(tokenizer)
    with atomic_dir(out_dir) as tmp:
        for name, part in (("vae", vae), ("text_encoder", text_encoder), ("tokenizer", tokenizer),
                           ("scheduler", DDIMScheduler(**SCHEDULE))):
            part.save_pretrained(tmp / name)
        save_file({k: v.contiguous() for k, v in encodings.items()}, tmp / ENCODINGS)
    return seconds


def pretrain_toy_unet(base_dir: str | Path, role: str, out_dir: str | Path, run_dir: str | Path,
                      cfg: ToyConfig) -> float:
    """Train the ``role`` U-Net (``teacher`` or ``student``) on the base folder's encodings
    (checkpoints and ``loss.parquet`` in ``run_dir``) and save it with the base components as a
    ``StableDiffusionPipeline`` folder. Returns seconds."""
    if role not in ROLES:
        raise KDError(f"toy U-Net role {role!r}; choose one of {', '.join(ROLES)}")
    base = Path(base_dir)
    enc = load_file(base / ENCODINGS)
    seed = cfg.seed + 1 + ROLES.index(role)  # the two U-Nets draw independent batches
    seed_everything(seed)
    t0 = time.perf_counter()
    unet = train_unet(role, enc, getattr(cfg, role), run_dir, seed,
                      run_key(role=role, unet=asdict(getattr(cfg, role)), base=fingerprint(str(base))))
    seconds = time.perf_counter() - t0
    save_pipeline(out_dir, vae=AutoencoderKL.from_pretrained(base / "vae"),
                  text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder"),
                  tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer"), unet=unet,
                  scheduler=DDIMScheduler.from_pretrained(base / "scheduler"))
    return seconds


def pretrain_toy_models(data_table: str | Path, base_dir: str | Path, teacher_dir: str | Path,
                        student_dir: str | Path, run_dir: str | Path, cfg: ToyConfig) -> dict[str, float]:
    """The three steps in one call (the workflow runs them as three jobs, the U-Nets side by side):
    the base folder, then the teacher and the student; their runs in ``<run_dir>/{vae,teacher,student}/``."""
    run_dir = Path(run_dir)
    times = {"vae_s": pretrain_toy_base(data_table, base_dir, run_dir / "vae", cfg)}
    for role, out in (("teacher", teacher_dir), ("student", student_dir)):
        times[f"{role}_s"] = pretrain_toy_unet(base_dir, role, out, run_dir / role, cfg)
    return times
