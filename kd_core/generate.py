"""Text-to-image generation with any diffusers pipeline, idempotent per (prompt_id, seed).

Each image gets its own CPU ``torch.Generator`` seeded with the prompt table's seed, so its initial
noise depends on neither the batch size nor the device. (The pixels of a batch of 1 and of 8 can
still differ by one grey level in a few pixels: batched convolutions round differently.) Batches
are fixed chunks of the prompt table, so a resumed run recomputes a missing image in the very
batch it would have had, and the images are bit-identical to an uninterrupted run's.

PNGs are written as ``<prompt_id>_<seed>.png`` with a manifest, ``<name>.parquet``: the workflow
makes one per prompt split (``images/<model>/{train,eval,filler}.parquet``, each its own job, so
that a consumer of one split never waits for, nor reruns with, another). Every image made is also
listed in a hidden record beside it (``.<name>.record.parquet``, written after each batch and kept):
Snakemake deletes a job's manifest before it runs the job again, and the record is how a rerun (an
interrupted run, a model re-exported with the same bytes) finds the images already made. An image is
reused only when it was made with the same settings, whichever table of the folder lists it.

Sharded generation (:mod:`kd_core.shards`): shard ``i`` of ``n`` makes a batch-aligned contiguous
slice of the prompt table into the same folder and writes ``shards/<name>-<i>-of-<n>.parquet``;
:func:`gather_manifests` joins the shards into the manifest an unsharded run writes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.fast_paths import FastPaths, apply_to_pipeline
from kd_core.io import read_metadata, save_png, write_parquet
from kd_core.models.loading import image_size, is_conditional, load_pipeline
from kd_core.seeding import resolve_device, resolve_dtype
from kd_core.shards import Shard, shard_bounds
from kd_core.sources import fingerprint

MANIFEST_SCHEMA = pa.schema([
    ("file", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()), ("split", pa.string()),
    ("prompt", pa.string()), ("negative_prompt", pa.string()), ("model", pa.string()), ("source", pa.string()),
    ("scheduler", pa.string()), ("steps", pa.int64()), ("guidance_scale", pa.float64()), ("height", pa.int64()),
    ("width", pa.int64()), ("dtype", pa.string()), ("device", pa.string()), ("settings_hash", pa.string()),
    ("wall_time_s", pa.float64()),
])
RECORD = ".manifest.record.parquet"  # the record of the images of ``manifest.parquet`` (name "manifest")


@dataclass(frozen=True)
class GenerationConfig:
    steps: int = 25
    guidance_scale: float = 4.0
    scheduler: str = "default"
    resolution: int | None = None  # None: the model's native size
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    variant: str | None = None
    vae: str | None = None
    lora: str | None = None  # a LoRA adapter folder applied to the model
    fast_paths: FastPaths = FastPaths()  # speed switches (kd_core.fast_paths); all off: plain diffusers


def _settings(source: str, cfg: GenerationConfig, size: int, device: torch.device, dtype: torch.dtype) -> dict:
    return {"source": source, "scheduler": cfg.scheduler, "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
            "height": size, "width": size, "dtype": str(dtype).removeprefix("torch."), "device": device.type,
            "variant": cfg.variant, "vae": cfg.vae, "lora": cfg.lora,
            "weights": [fingerprint(source), fingerprint(cfg.vae), fingerprint(cfg.lora)],
            # the switches can move pixels (TF32, other kernels): part of the settings once one is on
            **({"fast_paths": asdict(cfg.fast_paths)} if cfg.fast_paths != FastPaths() else {})}


def _progress_tables(out_dir: Path, name: str) -> list[Path]:
    """Every table that may list finished images of the manifest ``name``: itself, its shard manifests
    and its records (whole-run and per shard). Not another split's tables, which never list them."""
    tables = [out_dir / f"{name}.parquet", *sorted((out_dir / "shards").glob(f"{name}-*.parquet")),
              *sorted(out_dir.glob(f".{name}.record*.parquet"))]
    return [p for p in tables if p.is_file()]


def _reusable(out_dir: Path, name: str, settings_hash: str) -> pd.DataFrame:
    """Rows of earlier runs (manifests, shard manifests, records) made with these settings, whose PNG exists."""
    frames = [df for df in (pd.read_parquet(p) for p in _progress_tables(out_dir, name)) if len(df)]
    if not frames:
        return pd.DataFrame(columns=MANIFEST_SCHEMA.names)
    old = pd.concat(frames).drop_duplicates(["prompt_id", "seed"], keep="last")
    keep = (old["settings_hash"] == settings_hash) & old["file"].map(lambda f: (out_dir / f).is_file())
    return old[keep]


def manifest_path(out_dir: str | Path, shard: Shard | None = None, name: str = "manifest") -> Path:
    """``<name>.parquet`` of an unsharded run, else ``shards/<name>-<i>-of-<n>.parquet``."""
    out_dir = Path(out_dir)
    return out_dir / f"{name}.parquet" if shard is None else out_dir / "shards" / f"{name}-{shard.name}.parquet"


def sample_batch(pipe, prompts: list[str], negative: list[str] | None, cfg: GenerationConfig, size: int,
                 generators: list[torch.Generator], **kwargs) -> list:
    """One image per prompt; an unconditional pipeline (a pixel or latent DDPM) ignores the prompts, and the
    prompt table then only fixes the number of images and their seeds."""
    if is_conditional(pipe):
        return pipe(prompt=prompts, negative_prompt=negative, num_inference_steps=cfg.steps,
                    guidance_scale=cfg.guidance_scale, height=size, width=size, generator=generators, **kwargs).images
    return pipe(batch_size=len(prompts), num_inference_steps=cfg.steps, generator=generators).images


def generate_images(source: str, prompts: pd.DataFrame, out_dir: str | Path, cfg: GenerationConfig,
                    model_name: str, provenance: dict | None = None, shard: Shard | None = None,
                    name: str = "manifest") -> pd.DataFrame:
    """Generate one image per row of ``prompts`` (columns of ``kd_core.prompts.PROMPT_SCHEMA``), or
    per row of ``shard``'s slice of them, into ``out_dir``; returns (and writes) the manifest of those
    rows, ``<name>.parquet``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = manifest_path(out_dir, shard, name)
    record = out_dir / f".{name}.record{'.' + shard.name if shard else ''}.parquet"
    lo, hi = (0, len(prompts)) if shard is None else shard_bounds(len(prompts), shard, cfg.batch_size)
    prompts = prompts.iloc[lo:hi]
    meta = {"config": asdict(cfg), **({"shard": shard.name} if shard else {}), **(provenance or {})}
    if prompts.empty:  # a surplus shard (more shards than batches): nothing to load or make
        manifest = pd.DataFrame(columns=MANIFEST_SCHEMA.names)
        write_parquet(manifest, out_path, MANIFEST_SCHEMA, "images/manifest", meta)
        return manifest
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_pipeline(source, device, dtype, cfg.variant, cfg.vae, cfg.scheduler, cfg.lora)
    pipe.set_progress_bar_config(disable=True)
    apply_to_pipeline(pipe, cfg.fast_paths)
    size = image_size(pipe, cfg.resolution, "generation resolution")
    settings = _settings(source, cfg, size, device, dtype)
    shash = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    attrs = [c for c in prompts.columns if c not in MANIFEST_SCHEMA.names and c != "grammar"]

    done = _reusable(out_dir, name, shash)
    wanted = set(zip(prompts["prompt_id"], prompts["seed"], strict=True))
    keep = [k in wanted for k in zip(done["prompt_id"], done["seed"], strict=True)]
    done = done.loc[pd.Series(keep, index=done.index, dtype=bool)]  # this table's rows only
    done_keys = set(zip(done["prompt_id"], done["seed"], strict=True))
    missing = [k not in done_keys for k in zip(prompts["prompt_id"], prompts["seed"], strict=True)]
    rows = done.to_dict("records")
    desc = f"generate {model_name}" + (f" shard {shard.name}" if shard else "")
    bar = tqdm(total=len(prompts), initial=len(prompts) - sum(missing), desc=desc, unit="img")
    for start in range(0, len(prompts), cfg.batch_size):
        if not any(missing[start : start + cfg.batch_size]):
            continue
        batch = prompts.iloc[start : start + cfg.batch_size]
        todo = missing[start : start + cfg.batch_size]
        negative = list(batch["negative_prompt"]) if (batch["negative_prompt"] != "").any() else None
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in batch["seed"]]
        t0 = time.perf_counter()
        with torch.inference_mode():
            images = sample_batch(pipe, list(batch["prompt"]), negative, cfg, size, gens)
        per_image = (time.perf_counter() - t0) / len(batch)
        for image, r, new in zip(images, batch.itertuples(index=False), todo, strict=True):
            if not new:
                continue
            fname = f"{r.prompt_id}_{r.seed}.png"
            save_png(image, out_dir / fname)
            row = {"file": fname, "prompt_id": r.prompt_id, "seed": int(r.seed), "split": r.split, "prompt": r.prompt,
                   "negative_prompt": r.negative_prompt, "model": model_name, "settings_hash": shash,
                   "wall_time_s": per_image, **settings}
            rows.append(row | {a: getattr(r, a) for a in attrs})
        write_parquet(pd.DataFrame(rows), record, MANIFEST_SCHEMA, "images/record")
        bar.update(sum(todo))
    bar.close()
    manifest = pd.DataFrame(rows).set_index(["prompt_id", "seed"], drop=False)
    manifest = manifest.loc[list(zip(prompts["prompt_id"], prompts["seed"], strict=True))].reset_index(drop=True)
    manifest = manifest[MANIFEST_SCHEMA.names + attrs]
    settings = {k: v for k, v in settings.items() if k != "weights"}
    write_parquet(manifest, out_path, MANIFEST_SCHEMA, "images/manifest", {"settings": settings, **meta})
    if not any(missing):  # every image reused: the record lists them (this run may have written none)
        write_parquet(manifest, record, MANIFEST_SCHEMA, "images/record")
    return manifest


def gather_manifests(shards: list[str | Path], prompts: pd.DataFrame, out_path: str | Path) -> pd.DataFrame:
    """Join shard manifests into the manifest an unsharded run writes: one row per prompt-table row,
    in its order. A shard missing a row, or shards made with different settings, is an error."""
    frames = [pd.read_parquet(p) for p in shards]
    rows = pd.concat([f for f in frames if len(f)]) if any(len(f) for f in frames) else pd.DataFrame(columns=MANIFEST_SCHEMA.names)
    if rows["settings_hash"].nunique() > 1:
        raise KDError(f"shards of {Path(out_path).parent} were made with different generation settings; "
                      "delete its shards/ folder and rerun")
    keys = list(zip(prompts["prompt_id"], prompts["seed"], strict=True))
    indexed = rows.drop_duplicates(["prompt_id", "seed"]).set_index(["prompt_id", "seed"], drop=False)
    missing = [k for k in keys if k not in indexed.index]
    if missing:
        raise KDError(f"{len(missing)} image(s) of {Path(out_path).parent} are in no shard, e.g. prompt_id "
                      f"{missing[0][0]!r} seed {missing[0][1]}; rerun the generate_shard jobs")
    manifest = indexed.loc[keys].reset_index(drop=True)
    meta = next((read_metadata(p) for p, f in zip(shards, frames, strict=True) if len(f)), read_metadata(shards[0]))
    meta = {k: v for k, v in meta.items() if k not in ("shard", "table")} | {"shards": len(shards)}
    write_parquet(manifest, out_path, MANIFEST_SCHEMA, "images/manifest", meta)
    return manifest
