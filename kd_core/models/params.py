"""Parameter counts: of one module, and of each component of a pipeline."""

from __future__ import annotations

import torch

#: Pipeline components whose parameters count as the model's (denoiser, text encoders, VAE).
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "vae", "vqvae")


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pipeline_parameters(pipe) -> dict[str, int]:
    """Parameters per pipeline component (U-Net or transformer, text encoders, VAE)."""
    return {name: count_parameters(m) for name in COMPONENTS
            if isinstance(m := getattr(pipe, name, None), torch.nn.Module)}
