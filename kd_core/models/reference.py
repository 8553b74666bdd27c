"""Real-size pipelines with random weights, from the public configs of SD 1.5 and SDXL, without a download.

For benchmarks at the sizes a study runs at (``bench/gpu_suite.py``): the U-Net, VAE and text
encoder configs below are those of ``stable-diffusion-v1-5/stable-diffusion-v1-5`` and
``stabilityai/stable-diffusion-xl-base-1.0`` (their ``*/config.json``), the BK-SDM students are
derived from SD 1.5's U-Net by :mod:`kd_core.models.bk_sdm`, and the tokenizers are written by
:mod:`kd_core.models.tokenizer` over the built-in grammars (CLIP's vocabulary size is kept in the
text encoders, so every token id the project's tokenizer makes is valid). The compute of every
forward pass is that of the real model; only the weights (and so the images) are random.

``tiny=True`` gives the project's tiny pipelines of the same families (:mod:`kd_core.models.tiny`),
for running the same code on a CPU in seconds.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from kd_core.models.bk_sdm import LEVELS, SD15_UNET_CONFIG, SDXL_UNET_CONFIG, build_student
from kd_core.models.tokenizer import build_clip_tokenizer
from kd_core.prompts import iter_words
from kd_core.world.toy import SCHEDULE

MODELS = ("sd15", *LEVELS, "sdxl")
# SCHEDULE (kd_core.world.toy): SD 1.5's and SDXL's training schedule, scaled-linear betas
#: Native image sizes (px).
RESOLUTION = {"sd15": 512, "bk_base": 512, "bk_small": 512, "bk_tiny": 512, "sdxl": 1024}

SD15_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}
SDXL_VAE_CONFIG: dict[str, Any] = SD15_VAE_CONFIG | {"sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
#: CLIP ViT-L/14's text tower (SD 1.5's text encoder, SDXL's first).
CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}
#: OpenCLIP ViT-bigG/14's text tower (SDXL's second text encoder, with its projection).
CLIP_G_TEXT: dict[str, Any] = CLIP_L_TEXT | {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
    "hidden_act": "gelu", "projection_dim": 1280,
}


def _tokenizer():
    return build_clip_tokenizer(iter_words(["shapes", "dogs", "artistic"]), 77)


def _pipeline(model: str, device: torch.device, dtype: torch.dtype):
    """The real-size pipeline, its modules made directly on ``device`` (random init there, then ``dtype``)."""
    tok = _tokenizer()
    if model == "sdxl":  # schedulers keep CPU tensors: made outside the device context
        scheduler = EulerDiscreteScheduler(**{k: v for k, v in SCHEDULE.items() if k not in ("clip_sample", "set_alpha_to_one")})
    else:
        scheduler = DDIMScheduler(**SCHEDULE)
    with torch.device(device):
        if model == "sdxl":
            pipe = StableDiffusionXLPipeline(
                vae=AutoencoderKL(**SDXL_VAE_CONFIG), text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G_TEXT)), tokenizer=tok,
                tokenizer_2=tok, unet=UNet2DConditionModel(**SDXL_UNET_CONFIG),
                scheduler=scheduler)
        else:
            unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
            if model != "sd15":
                unet = build_student(unet, model)
            pipe = StableDiffusionPipeline(
                vae=AutoencoderKL(**SD15_VAE_CONFIG), text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)),
                tokenizer=tok, unet=unet, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device, dtype)


def _tiny_pipeline(model: str, device: torch.device, dtype: torch.dtype):
    from kd_core.models.loading import load_pipeline
    from kd_core.models.tiny import build_tiny_sd, build_tiny_sdxl

    with tempfile.TemporaryDirectory() as tmp:
        if model == "sdxl":
            build_tiny_sdxl(f"{tmp}/pipe")
        else:
            build_tiny_sd(f"{tmp}/pipe", sd15_layout=True)
        pipe = load_pipeline(f"{tmp}/pipe", torch.device("cpu"), torch.float32)
    if model in LEVELS:
        pipe.unet = build_student(pipe.unet, model)
    return pipe.to(device, dtype)


def reference_pipeline(model: str, device: torch.device, dtype: torch.dtype, tiny: bool = False, seed: int = 0):
    """``model`` (one of :data:`MODELS`) as a diffusers pipeline with random weights on ``device``."""
    if model not in MODELS:
        raise ValueError(f"unknown reference model {model!r}; choose one of {', '.join(MODELS)}")
    torch.manual_seed(seed)
    pipe = (_tiny_pipeline if tiny else _pipeline)(model, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolution(model: str, tiny: bool = False) -> int:
    """The native image size of ``model`` (the tiny pipelines: 64 px)."""
    return 64 if tiny else RESOLUTION[model]
