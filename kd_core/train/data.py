"""Image-caption training data, encoded once: VAE latents and text embeddings cached on disk.

Sources: a generation manifest (the teacher's images and prompts: knowledge transfer), a local
folder with a captions table (``metadata.jsonl`` as in Hugging Face ``imagefolder``, or
``captions.csv`` / ``captions.parquet``), or a Hugging Face ``datasets`` name when online.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.io import atomic_path
from kd_core.models.loading import autoencoder, is_conditional

FILE_COLUMNS = ("file", "file_name", "image")
CAPTION_COLUMNS = ("caption", "text", "prompt")


@dataclass(frozen=True)
class DataConfig:
    source: str  # manifest.parquet, a folder with captions, or a datasets name
    split: str | None = "train"  # manifest split to use (None: all rows)
    caption_column: str | None = None
    image_column: str | None = None
    max_items: int | None = None
    caption_template: str | None = None  # for captionless datasets, e.g. "an impressionist painting"
    filter: dict | None = None  # hub datasets: column -> value (or list of values) to keep


def load_pairs(cfg: DataConfig) -> pd.DataFrame:
    """(absolute image path, caption) pairs; one-line errors for missing files or columns."""
    src = Path(cfg.source).expanduser()
    if src.suffix == ".parquet" and src.is_file():
        df = pd.read_parquet(src)
        if cfg.split is not None and "split" in df.columns:
            df = df[df["split"] == cfg.split]
        root = src.parent
    elif src.is_dir():
        root = src
        tables = [src / n for n in ("metadata.jsonl", "captions.parquet", "captions.csv") if (src / n).is_file()]
        if not tables:
            raise KDError(f"dataset folder {src} has no metadata.jsonl, captions.parquet or captions.csv")
        t = tables[0]
        df = pd.read_json(t, lines=True) if t.suffix == ".jsonl" else pd.read_parquet(t) if t.suffix == ".parquet" else pd.read_csv(t)
    elif src.exists() or str(cfg.source).startswith(("/", ".", "~")):
        raise KDError(f"dataset {cfg.source!r} is neither a manifest .parquet nor a folder with captions")
    else:
        return _load_hub_dataset(cfg)
    if cfg.caption_template is not None:
        df = df.assign(caption=[cfg.caption_template.format(**r) for r in df.to_dict("records")])
    fcol = cfg.image_column or next((c for c in FILE_COLUMNS if c in df.columns), None)
    ccol = cfg.caption_column or next((c for c in CAPTION_COLUMNS if c in df.columns), None)
    if fcol is None or ccol is None or fcol not in df.columns or ccol not in df.columns:
        raise KDError(f"dataset {cfg.source}: needs an image column ({'/'.join(FILE_COLUMNS)}) and a caption column "
                      f"({'/'.join(CAPTION_COLUMNS)}); found {list(df.columns)}")
    out = pd.DataFrame({"image": [str(root / f) for f in df[fcol]], "prompt": df[ccol].astype(str).to_numpy()})
    missing = [p for p in out["image"] if not Path(p).is_file()]
    if missing:
        raise KDError(f"dataset {cfg.source}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    if out.empty:
        raise KDError(f"dataset {cfg.source} has no images (split {cfg.split!r})")
    return out.iloc[: cfg.max_items].reset_index(drop=True)


def _load_hub_dataset(cfg: DataConfig) -> pd.DataFrame:  # pragma: no cover - needs the network or a datasets cache
    try:
        import datasets
    except ImportError:
        raise KDError(f"dataset {cfg.source!r} looks like a Hugging Face dataset name: pip install datasets") from None
    ds = datasets.load_dataset(cfg.source, split=cfg.split or "train")
    for col, want in (cfg.filter or {}).items():
        keep = set(want) if isinstance(want, list) else {want}
        ds = ds.filter(lambda ex, col=col, keep=keep: ex[col] in keep)
    icol = cfg.image_column or "image"
    ccol = cfg.caption_column or next((c for c in CAPTION_COLUMNS if c in ds.column_names), None)
    if ccol is None and cfg.caption_template is None:
        raise KDError(f"dataset {cfg.source!r} has no caption column; set lora.caption_template")
    cache = Path(datasets.config.HF_DATASETS_CACHE) / "kd_core_images" / cfg.source.replace("/", "__")
    rows = []
    for i, item in enumerate(ds):
        if cfg.max_items is not None and i >= cfg.max_items:
            break
        path = cache / f"{i:07d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            item[icol].convert("RGB").save(path)
        caption = cfg.caption_template.format(**item) if cfg.caption_template else str(item[ccol])
        rows.append({"image": str(path), "prompt": caption})
    return pd.DataFrame(rows)


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

    The cache is keyed by the image files' names, sizes and mtimes, the prompts, the size and the
    model, so a changed dataset is encoded again and an unchanged one never is.
    """
    key_src = json.dumps({"files": [(p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in pairs["image"]],
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
