"""Image-caption training data (:mod:`kd_core.captions`), encoded once: VAE latents and text
embeddings cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kd_core.digests import file_digests
from kd_core.errors import KDError
from kd_core.io import atomic_path
from kd_core.models.loading import autoencoder, is_conditional


def _to_tensor(path: str, size: int) -> torch.Tensor:
    """Resize the short side to ``size``, centre-crop a square, scale to [-1, 1]."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1


@torch.no_grad()
def encode_pairs(pipe, pairs: pd.DataFrame, size: int, cache: str | Path, encode_text: bool = True,
                 batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Latent mean/std (scaled) per image and text embeddings per unique prompt, cached in ``cache``
    (a pixel-space pipeline without a VAE: the images in [-1, 1] as the mean, std 0, no text; an
    unconditional latent DDPM: no text).

    The cache is keyed by the image files' names and contents (SHA-256), the prompts, the size and
    the model, so a changed dataset is encoded again and an unchanged one never is, even rewritten.
    """
    key_src = json.dumps({"files": list(zip(pairs["image"], file_digests(list(pairs["image"])), strict=True)),
                          "prompts": list(pairs["prompt"]), "size": size, "text": encode_text,
                          "model": pipe.config.get("_name_or_path", type(pipe).__name__)})
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cache = Path(cache)
    if cache.is_file():
        data = load_file(str(cache))
        if data.get("key") is not None and bytes(data["key"].tolist()).decode() == key:
            return data
    vae = autoencoder(pipe)
    if vae is None:  # a pixel-space model: the "latents" are the images, std 0, no text
        x = torch.stack([_to_tensor(p, size) for p in tqdm(pairs["image"], desc="read images", mininterval=2)])
        data = {"latent_mean": x, "latent_std": torch.zeros_like(x), "prompt_index": torch.zeros(len(x), dtype=torch.long),
                "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}
        return _stored(data, cache)
    if not type(vae).__name__.startswith("AutoencoderKL"):
        raise KDError(f"the teacher's autoencoder is a {type(vae).__name__}; distilling on latents needs a KL "
                      "autoencoder (AutoencoderKL) with a posterior to encode with")
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    means, stds = [], []
    for i in tqdm(range(0, len(pairs), batch_size), desc="encode images", mininterval=2):
        x = torch.stack([_to_tensor(p, size) for p in pairs["image"].iloc[i : i + batch_size]])
        dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
        means.append(((dist.mean - shift) * scale).float().cpu())
        stds.append((dist.std * scale).float().cpu())
    prompts = sorted(pairs["prompt"].unique())
    data = {"latent_mean": torch.cat(means), "latent_std": torch.cat(stds),
            "prompt_index": torch.tensor(pairs["prompt"].map({p: i for i, p in enumerate(prompts)}).to_numpy()),
            "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}
    if encode_text and is_conditional(pipe):  # an unconditional latent DDPM has no text
        data.update(encode_text_batch(pipe, prompts))
    elif is_conditional(pipe):
        tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt")
        data["input_ids"] = tok.input_ids
    return _stored(data, cache)


def _stored(data: dict[str, torch.Tensor], cache: Path) -> dict[str, torch.Tensor]:
    """Write ``data`` to ``cache`` atomically and return what the file holds: a run that encodes and a
    resumed run that reads the cache then compute on the very same tensors (views and layouts of the
    freshly encoded ones round differently in the last bit)."""
    with atomic_path(cache, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in data.items()}, str(tmp))
    return load_file(str(cache))


def encode_text_batch(pipe, prompts: list[str], batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Prompt embeddings (and SDXL's pooled embeddings) through the pipeline's own ``encode_prompt``."""
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        enc = pipe.encode_prompt(chunk, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        if len(enc) == 4:  # SDXL: prompt, negative, pooled, negative pooled
            out.setdefault("prompt_embeds", []).append(enc[0].float().cpu())
            out.setdefault("pooled_embeds", []).append(enc[2].float().cpu())
        else:
            out.setdefault("prompt_embeds", []).append(enc[0].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def sdxl_added_cond(pooled: torch.Tensor, size: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """SDXL's micro-conditioning of a batch, as its pipeline passes it to the U-Net: the pooled text
    embeddings and the size ids (original size, crop (0, 0), target size) of square ``size`` images."""
    time_ids = torch.tensor([size, size, 0, 0, size, size], dtype=dtype, device=device).repeat(len(pooled), 1)
    return {"text_embeds": pooled.to(device, dtype), "time_ids": time_ids}
