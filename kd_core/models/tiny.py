"""Tiny random-weight Stable Diffusion 1.x and SDXL pipelines, saved with ``save_pretrained``.

They have the real classes and the real wiring (two text encoders and micro-conditioning for
SDXL), so every code path that loads, samples or trains a real model is tested on them offline.
Their tokenizers are written by :mod:`kd_core.models.tokenizer` over the built-in grammars.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from kd_core.io import atomic_dir
from kd_core.models.tokenizer import build_clip_tokenizer
from kd_core.prompts import iter_words
from kd_core.world.toy import SCHEDULE, save_pipeline

GRAMMARS = ["shapes", "dogs", "artistic"]
MAX_LENGTH = 77  # as in CLIP


def _text_config(vocab: int, hidden: int = 32, layers: int = 2) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=4, max_position_embeddings=MAX_LENGTH, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, projection_dim=hidden)


def tiny_vae() -> AutoencoderKL:
    """A two-stage KL autoencoder (2 pixels per latent, 4 latent channels) with random weights."""
    return AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=64)


def build_tiny_sd(out_dir: str | Path, seed: int = 0, sd15_layout: bool = False) -> None:
    """An SD 1.x-style pipeline (64 px, 32x32x4 latents) with random weights. ``sd15_layout``: SD 1.5's
    block layout in miniature (three stages, the two innermost of equal width, two layers per
    block), from which every BK-SDM student can be derived."""
    torch.manual_seed(seed)
    tok = build_clip_tokenizer(iter_words(GRAMMARS), MAX_LENGTH)
    text = CLIPTextModel(_text_config(len(tok)))
    if sd15_layout:
        layout = {"block_out_channels": (32, 64, 64), "layers_per_block": 2,
                  "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}
    else:
        layout = {"block_out_channels": (32, 64), "layers_per_block": 1,
                  "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                  "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8, **layout)
    save_pipeline(out_dir, vae=tiny_vae(), text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(**SCHEDULE))


def build_tiny_sdxl(out_dir: str | Path, seed: int = 0, sdxl_layout: bool = False) -> None:
    """An SDXL-style pipeline: two text encoders, ``text_time`` micro-conditioning, random weights.
    ``sdxl_layout``: SDXL's U-Net layout in miniature (an outer stage without attention, two with
    transformers 2 and 4 deep, two layers per block), from which every SDXL block-KD student can be
    derived."""
    torch.manual_seed(seed)
    tok = build_clip_tokenizer(iter_words(GRAMMARS), MAX_LENGTH)
    text = CLIPTextModel(_text_config(len(tok)))
    text_2 = CLIPTextModelWithProjection(_text_config(len(tok)))
    if sdxl_layout:
        layout = dict(block_out_channels=(16, 32, 64), layers_per_block=2,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                      attention_head_dim=(2, 4, 8), transformer_layers_per_block=(1, 2, 4))
    else:
        layout = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                      transformer_layers_per_block=(1, 1))
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
        norm_num_groups=8, **layout)
    sched = EulerDiscreteScheduler(**{k: v for k, v in SCHEDULE.items() if k not in ("clip_sample", "set_alpha_to_one")})
    pipe = StableDiffusionXLPipeline(vae=tiny_vae(), text_encoder=text, text_encoder_2=text_2, tokenizer=tok,
                                     tokenizer_2=tok, unet=unet, scheduler=sched)
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> None:
    """A CLIP model (text and vision towers, 32 px images) with random weights, and its processor:
    it exercises CLIP score and CLIP-feature FID through the real ``from_pretrained`` path."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    torch.manual_seed(seed)
    tok = build_clip_tokenizer(iter_words(GRAMMARS), MAX_LENGTH)
    text = _text_config(len(tok))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(tmp)


TINY_BUILDERS = {"sd": build_tiny_sd, "sdxl": build_tiny_sdxl, "clip": build_tiny_clip}
