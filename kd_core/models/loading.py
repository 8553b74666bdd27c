"""Loading diffusers pipelines by hub id or local path (safetensors only, no remote code)."""

from __future__ import annotations

from pathlib import Path

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
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)

from kd_core.errors import KDError
from kd_core.models.folders import check_size, size_multiple
from kd_core.models.integrity import check_adapter_folder, check_local_model, check_model_folder
from kd_core.models.width import unet_class
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
#: Samplers whose step draws noise: ``LDMPipeline`` does not pass them its generator (not reproducible).
STOCHASTIC_SCHEDULERS = ("ddpm", "euler_a", "lcm")
#: Samplers a pixel ``DDPMPipeline`` runs correctly (its loop calls neither scale_model_input nor init_noise_sigma).
PIXEL_SCHEDULERS = ("ddpm", "ddim")


def _resolved(source: str, what: str, check=check_model_folder) -> str:
    """``source`` as ``from_pretrained`` takes it: a local folder (checked whole first) or a hub id."""
    check_source(source, what)
    check_local_model(source, what, check)
    return local_path(source)


def load_pipeline(source: str, device: torch.device, dtype: torch.dtype, variant: str | None = None,
                  vae: str | None = None, scheduler: str = "default", lora: str | None = None,
                  seeded_steps: bool = False) -> DiffusionPipeline:
    """``DiffusionPipeline.from_pretrained`` for SD 1.x, SDXL, sd-turbo, pixel DDPMs...; weights from safetensors only.

    ``vae`` replaces the pipeline's VAE (e.g. an fp16-safe SDXL VAE); without one, SDXL's VAE in
    fp16 is upcast by diffusers when its config sets ``force_upcast``. ``scheduler`` swaps the
    sampler while keeping the model's noise schedule; x0 clipping is off for latent pipelines.
    ``lora`` is a folder written by ``save_lora_weights`` (a LoRA-tuned student). An unconditional
    latent DDPM (``LDMPipeline``) runs in fp32 only (it draws float32 noise for a U-Net of any
    dtype) and, unless the caller seeds every step itself (``seeded_steps``), with a deterministic
    sampler (it does not pass its generator to the sampler's step).
    """
    path = _resolved(source, "model")
    kwargs: dict = {"dtype": dtype, "use_safetensors": True}
    if variant:
        kwargs["variant"] = variant
    try:
        index = DiffusionPipeline.load_config(path)
    except (OSError, ValueError) as exc:
        raise KDError(f"model {source!r} cannot be loaded: {str(exc).splitlines()[0]} "
                      "(for hub ids, download it into the Hugging Face cache first)") from None
    ldm = index.get("_class_name") == "LDMPipeline"
    if ldm and dtype != torch.float32:
        raise KDError(f"model {source!r} is an unconditional latent DDPM (LDMPipeline), which samples in fp32 only; "
                      "set its generation dtype to fp32")
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if vae:
        # an unconditional latent DDPM (LDMPipeline) names its autoencoder "vqvae"
        kwargs["vqvae" if "vqvae" in index else "vae"] = AutoencoderKL.from_pretrained(_resolved(vae, "vae"), dtype=dtype,
                                                                                      use_safetensors=True)
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    if scheduler != "default":
        if scheduler not in SCHEDULERS:
            raise KDError(f"unknown scheduler {scheduler!r}; known: default, {', '.join(SCHEDULERS)}")
        if not is_latent(pipe) and scheduler not in PIXEL_SCHEDULERS:
            # DDPMPipeline neither scales the model input nor the initial noise, as Euler / DPM++ need
            raise KDError(f"model {source!r} is a pixel DDPM, which samples with {' or '.join(PIXEL_SCHEDULERS)} "
                          f"(or default), not {scheduler!r}; change the scheduler")
        if ldm and not seeded_steps and scheduler in STOCHASTIC_SCHEDULERS:
            raise KDError(f"model {source!r} is an unconditional latent DDPM (LDMPipeline), which cannot seed the step "
                          f"noise of {scheduler!r}; choose a deterministic one (default, ddim, dpmpp, euler, unipc, pndm)")
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    if is_latent(pipe) and "clip_sample" in pipe.scheduler.config and pipe.scheduler.config.clip_sample:
        pipe.scheduler.register_to_config(clip_sample=False)  # pixel DDPMs keep it: x0 in [-1, 1] is right for pixels
    if lora:
        pipe.load_lora_weights(_resolved(lora, "lora adapter", check_adapter_folder))
        # the injected LoRA layers (with their dropout) are created in training mode: sample in eval mode
        for name in ("unet", "text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).eval()
    return pipe.to(device)


#: Options of ``from_pretrained`` that a tokenizer keeps in ``init_kwargs`` and would save.
LOADING_OPTIONS = ("local_files_only", "cache_dir", "force_download", "token", "revision")


def reset_tokenizers(*tokenizers) -> None:
    """Clear the truncation and padding that a fast tokenizer keeps from its last call (pipelines'
    ``tokenizer`` / ``tokenizer_2``, or tokenizers given directly). Saved as they are, they would make
    a folder's ``tokenizer.json`` depend on whether the tokenizer ran before the save: a resumed
    training that read its cache would write other bytes than the run that encoded, and every consumer
    keyed on the folder's content would start again. Also drop the loading options a tokenizer keeps
    (``local_files_only`` follows ``HF_HUB_OFFLINE``): the saved bytes must not depend on the environment."""
    for tok in tokenizers:
        for t in (getattr(tok, "tokenizer", None), getattr(tok, "tokenizer_2", None), tok):
            backend = getattr(t, "backend_tokenizer", None)
            if backend is not None:
                backend.no_truncation()
                backend.no_padding()
            init_kwargs = getattr(t, "init_kwargs", None)
            if isinstance(init_kwargs, dict):
                for key in LOADING_OPTIONS:
                    init_kwargs.pop(key, None)


def autoencoder(pipe: DiffusionPipeline) -> torch.nn.Module | None:
    """The pipeline's latent autoencoder: SD-style ``vae``, an unconditional ``LDMPipeline``'s
    ``vqvae`` (a KL autoencoder when the workflow trained it; a ``VQModel`` in CompVis' LDMs,
    which sample but cannot be distilled here); None for a pixel DDPM."""
    return getattr(pipe, "vae", None) or getattr(pipe, "vqvae", None)


def is_latent(pipe: DiffusionPipeline) -> bool:
    """A latent pipeline (SD-style, or an unconditional ``LDMPipeline``) rather than a pixel-space DDPM (``DDPMPipeline``)."""
    return autoencoder(pipe) is not None


def latent_scale(pipe: DiffusionPipeline) -> int:
    """Pixels per latent along one side (8 for SD); 1 for a pixel DDPM."""
    ae = autoencoder(pipe)
    return 1 if ae is None else 2 ** (len(ae.config.block_out_channels) - 1)


def is_conditional(pipe: DiffusionPipeline) -> bool:
    """Text-conditioned (a text encoder) rather than unconditional."""
    return getattr(pipe, "text_encoder", None) is not None or getattr(pipe, "text_encoder_2", None) is not None


def model_default_size(pipe: DiffusionPipeline) -> int:
    return int(pipe.unet.config.sample_size * latent_scale(pipe))


def image_size(pipe: DiffusionPipeline, resolution: int | None, what: str = "resolution") -> int:
    """``resolution`` (None: the model's native size), after checking the pipeline can take it: one
    line naming ``what`` and the nearest sizes that suit its autoencoder and U-Net otherwise."""
    size = resolution or model_default_size(pipe)
    ae = autoencoder(pipe)
    check_size(size, size_multiple(pipe.unet.config, ae.config if ae is not None else None, is_conditional(pipe)), what)
    return size



def load_unet(source: str, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The denoiser U-Net of a pipeline folder (its ``unet/``) or of a U-Net folder, safetensors only;
    ``UNet2DConditionModel`` or ``UNet2DModel`` as its config says."""
    path = _resolved(source, "model")
    sub = "unet" if (Path(path) / "unet" / "config.json").is_file() else None
    config = UNet2DConditionModel.load_config(path, subfolder=sub)
    return unet_class(config).from_pretrained(path, subfolder=sub, dtype=dtype, use_safetensors=True).to(device)
