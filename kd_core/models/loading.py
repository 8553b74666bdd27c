"""Loading diffusers pipelines by hub id or local path (safetensors only, no remote code)."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from kd_core.errors import KDError
from kd_core.sources import check_source, local_path

SCHEDULERS = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp": DPMSolverMultistepScheduler,
    "pndm": PNDMScheduler,
    "unipc": UniPCMultistepScheduler,
    "lcm": LCMScheduler,
}
def load_pipeline(source: str, device: torch.device, dtype: torch.dtype, variant: str | None = None,
                  vae: str | None = None, scheduler: str = "default", lora: str | None = None) -> DiffusionPipeline:
    """``DiffusionPipeline.from_pretrained`` for SD 1.x, SDXL, sd-turbo...; weights from safetensors only.

    ``vae`` replaces the pipeline's VAE (e.g. an fp16-safe SDXL VAE); without one, SDXL's VAE in
    fp16 is upcast by diffusers when its config sets ``force_upcast``. ``scheduler`` swaps the
    sampler while keeping the model's noise schedule; x0 clipping is always off (latent space).
    ``lora`` is a folder written by ``save_lora_weights`` (a LoRA-tuned student).
    """
    check_source(source, "model")
    path = local_path(source)
    kwargs: dict = {"dtype": dtype, "use_safetensors": True}
    if variant:
        kwargs["variant"] = variant
    try:
        index = DiffusionPipeline.load_config(path)
    except (OSError, ValueError) as exc:
        raise KDError(f"model {source!r} cannot be loaded: {str(exc).splitlines()[0]} "
                      "(for hub ids, download it into the Hugging Face cache first)") from None
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if vae:
        check_source(vae, "vae")
        kwargs["vae"] = AutoencoderKL.from_pretrained(local_path(vae), dtype=dtype, use_safetensors=True)
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    if scheduler != "default":
        if scheduler not in SCHEDULERS:
            raise KDError(f"unknown scheduler {scheduler!r}; known: default, {', '.join(SCHEDULERS)}")
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    if "clip_sample" in pipe.scheduler.config and pipe.scheduler.config.clip_sample:
        pipe.scheduler.register_to_config(clip_sample=False)
    if lora:
        check_source(lora, "lora adapter")
        pipe.load_lora_weights(local_path(lora))
        # the injected LoRA layers (with their dropout) are created in training mode: sample in eval mode
        for name in ("unet", "text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).eval()
    return pipe.to(device)


def model_default_size(pipe: DiffusionPipeline) -> int:
    scale = getattr(pipe, "vae_scale_factor", 8)
    return int(pipe.unet.config.sample_size * scale)

