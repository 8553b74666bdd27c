"""The shapes world's SDXL-style teacher: a ``StableDiffusionXLPipeline`` in miniature.

It has what separates SDXL from SD 1.x and nothing else changed: two text encoders whose
penultimate hidden states are concatenated (the toy base's ``CLIPTextModel`` and a second, frozen
random ``CLIPTextModelWithProjection`` whose projected end-of-text state is the pooled embedding),
``text_time`` micro-conditioning (pooled embedding and size ids), and SDXL's U-Net layout: an outer
stage without attention, then two cross-attention stages whose transformers are several blocks
deep (SDXL: 1, 2, 10), so that the SDXL block-KD students (``ssd_1b``, ``vega``, ``koala_1b``,
``koala_700m``) can be derived from it. It shares the toy base's VAE and tokenizer, and trains on
the same latents with the toy teacher's recipe (:func:`kd_core.world.toy.train_unet`).

Prompts are encoded by the pipeline's own ``encode_prompt``, and a dropped prompt takes zeros for
both embeddings, as the pipeline samples the unconditional half of guidance
(``force_zeros_for_empty_prompt``, SDXL's default) and as SDXL was trained.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from kd_core.errors import KDError
from kd_core.io import atomic_dir
from kd_core.models.bk_configs import SDXL_UNET_CONFIG
from kd_core.models.loading import reset_tokenizers
from kd_core.seeding import seed_everything
from kd_core.sources import fingerprint
from kd_core.train.data import encode_text_batch
from kd_core.train.loop import run_key
from kd_core.world.toy import (
    ENCODINGS,
    SCHEDULE,
    TextEncoderConfig,
    UNetConfig,
    _groups,
    build_text_encoder,
    train_unet,
)


@dataclass(frozen=True)
class UNetXLConfig(UNetConfig):
    """The toy teacher's recipe (:class:`~kd_core.world.toy.UNetConfig`) on SDXL's three stages."""

    channels: tuple[int, ...] = (32, 64, 64)
    transformer_depths: tuple[int, ...] = (1, 2, 4)  # SDXL: 1, 2, 10 (the outer stage has no transformers)
    layers_per_block: int = 2
    time_embed_dim: int = 8  # addition_time_embed_dim (SDXL: 256)
    steps: int = 1000
    lr: float = 3e-3


@dataclass(frozen=True)
class ToyXLConfig:
    unet: UNetXLConfig = field(default_factory=UNetXLConfig)
    text_2: TextEncoderConfig = field(default_factory=TextEncoderConfig)  # its max_length: the base tokenizer's
    seed: int = 0


def build_unet_xl(cfg: UNetXLConfig, sample_size: int, in_channels: int, cross_attention_dim: int,
                  pooled_dim: int) -> UNet2DConditionModel:
    """SDXL's U-Net layout at ``cfg``'s widths and depths (diffusers' own config keys)."""
    n = len(cfg.channels)
    if n != 3 or len(cfg.transformer_depths) != 3:
        raise KDError(f"the SDXL-style toy teacher has SDXL's three stages: 'channels' and 'transformer_depths' need "
                      f"three entries each, they have {list(cfg.channels)} and {list(cfg.transformer_depths)}")
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=tuple(SDXL_UNET_CONFIG["down_block_types"]), up_block_types=tuple(SDXL_UNET_CONFIG["up_block_types"]),
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        transformer_layers_per_block=tuple(cfg.transformer_depths), attention_head_dim=cfg.attention_heads,
        use_linear_projection=True, cross_attention_dim=cross_attention_dim, addition_embed_type="text_time",
        addition_time_embed_dim=cfg.time_embed_dim, projection_class_embeddings_input_dim=6 * cfg.time_embed_dim + pooled_dim,
        norm_num_groups=min(_groups(c) for c in cfg.channels),
    )


def pretrain_toy_teacher_xl(base_dir: str | Path, data_table: str | Path, out_dir: str | Path, run_dir: str | Path,
                            cfg: ToyXLConfig) -> float:
    """Train the SDXL-style teacher on the toy base's latents of the train split ``data_table``
    (checkpoints and ``loss.parquet`` in ``run_dir``) and save it as a ``StableDiffusionXLPipeline``
    folder with the base's VAE, text encoder and tokenizer. Returns seconds."""
    base = Path(base_dir)
    enc = load_file(base / ENCODINGS)
    prompts = sorted(pd.read_parquet(data_table, columns=["prompt"])["prompt"].unique())
    if len(prompts) != len(enc["prompt_embeds"]) - 1:
        raise KDError(f"{data_table} has {len(prompts)} prompts but the toy base {base} was made with "
                      f"{len(enc['prompt_embeds']) - 1}: rebuild the toy base from this table")
    seed = cfg.seed + 3  # beside the toy teacher's and student's (seed + 1, seed + 2)
    seed_everything(seed)
    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    text_2 = build_text_encoder(replace(cfg.text_2, max_length=tokenizer.model_max_length), len(tokenizer), seed,
                                with_projection=True)
    vae = AutoencoderKL.from_pretrained(base / "vae")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder"), text_encoder_2=text_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=None, force_zeros_for_empty_prompt=True,
        scheduler=EulerDiscreteScheduler(**{k: v for k, v in SCHEDULE.items() if k not in ("clip_sample", "set_alpha_to_one")}))
    with torch.no_grad():
        text = encode_text_batch(pipe, prompts)  # the pipeline's own encoding: penultimate states of both, pooled
    zeros = {k: torch.zeros_like(v[:1]) for k, v in text.items()}  # the unconditional: zeros, as the pipeline's
    enc = {"latent_mean": enc["latent_mean"], "latent_std": enc["latent_std"], "prompt_index": enc["prompt_index"],
           **{k: torch.cat([v, zeros[k]]) for k, v in text.items()}}
    mean = enc["latent_mean"]
    image_size = mean.shape[-1] * pipe.vae_scale_factor
    torch.manual_seed(seed)
    unet = build_unet_xl(cfg.unet, mean.shape[-1], mean.shape[1], enc["prompt_embeds"].shape[-1],
                         enc["pooled_embeds"].shape[-1])
    key = run_key(role="teacher_xl", unet=asdict(cfg.unet), text_2=asdict(cfg.text_2), base=fingerprint(str(base)),
                  prompts=hashlib.sha256("\n".join(prompts).encode()).hexdigest())
    t0 = time.perf_counter()
    unet = train_unet("teacher_xl", enc, cfg.unet, run_dir, seed, key, unet=unet, image_size=image_size)
    seconds = time.perf_counter() - t0
    pipe.register_modules(unet=unet)
    reset_tokenizers(pipe)  # the same model, the same bytes, whether or not its tokenizer ran
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return seconds
