"""Noise-prediction error of students against their teacher per timestep bucket: the size x
timestep heatmap of the model-size study.

For every evaluation image (its VAE latent mean ``z0``; a pixel DDPM: the image itself) and every bucket of the training schedule,
one timestep is drawn uniformly inside the bucket and one Gaussian noise, both from a generator
seeded by (seed, image, bucket), so teacher and every student see exactly the same noised latent
``z_t``. The table holds, per model and bucket, the mean over images of
MSE(student prediction, teacher prediction) (``target = teacher``: how far the student is from
what it was distilled to match) and of MSE(prediction, training target) (``target = noise``: the task
error, also for the teacher; the target is the noise for epsilon prediction, v or z0 for the others), with percentile-bootstrap 95% CIs over images. Rows with
``bucket = -1`` cover every bucket at once: per image the mean over buckets, then its mean and CI.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from kd_core.captions import DataConfig, load_pairs
from kd_core.errors import KDError
from kd_core.io import write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci
from kd_core.models.loading import load_pipeline, load_unet, model_default_size
from kd_core.models.params import count_parameters
from kd_core.seeding import resolve_device
from kd_core.train.data import encode_pairs
from kd_core.train.diffusion import Diffusion

TIMESTEP_SCHEMA = pa.schema([
    ("model", pa.string()), ("factor", pa.float64()), ("params", pa.int64()), ("bucket", pa.int64()),
    ("t_low", pa.int64()), ("t_high", pa.int64()), ("target", pa.string()), ("mse", pa.float64()),
    ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("n", pa.int64()),
])


@dataclass(frozen=True)
class TimestepConfig:
    buckets: int = 10
    max_images: int | None = 64
    batch_size: int = 16
    device: str = "auto"


def bucket_edges(n_train_timesteps: int, buckets: int) -> list[tuple[int, int]]:
    """``buckets`` contiguous [low, high) timestep ranges covering 0 .. n_train_timesteps."""
    if not 1 <= buckets <= n_train_timesteps:
        raise KDError(f"timestep buckets must be between 1 and {n_train_timesteps}, got {buckets}")
    edges = np.linspace(0, n_train_timesteps, buckets + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@torch.no_grad()
def timestep_mse(teacher: str, students: dict[str, str], factors: dict[str, float], data: DataConfig,
                 out_path: str | Path | None, cfg: TimestepConfig, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Per model (teacher and ``students``: name -> pipeline folder) and bucket: MSE to the teacher and to the noise."""
    device = resolve_device(cfg.device)
    pipe = load_pipeline(teacher, device, torch.float32)
    pairs = load_pairs(data)
    if cfg.max_images:
        pairs = pairs.iloc[: cfg.max_images]
    if len(pairs) < 2:
        raise KDError(f"timestep MSE needs at least 2 images; {data.source} has {len(pairs)}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = encode_pairs(pipe, pairs, model_default_size(pipe), Path(tmp) / "cache.safetensors")
    z0 = cache["latent_mean"]
    emb = cache["prompt_embeds"][cache["prompt_index"]] if "prompt_embeds" in cache else None  # None: an unconditional DDPM
    diffusion = Diffusion(pipe.scheduler.config)
    buckets = bucket_edges(diffusion.num_train_timesteps, cfg.buckets)
    unets = {"teacher": pipe.unet.eval()} | {name: load_unet(path, device).eval() for name, path in students.items()}
    n = len(z0)
    preds: dict[str, list[torch.Tensor]] = {m: [] for m in unets}
    targets = []
    for b, (lo, hi) in enumerate(tqdm(buckets, desc="timestep MSE", unit="bucket")):
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + i * 1009 + b) for i in range(n)]
        t = torch.tensor([int(torch.randint(lo, hi, (1,), generator=g)) for g in gens])
        noise = torch.stack([torch.randn(z0.shape[1:], generator=g) for g in gens])
        noised = diffusion.noised(z0, noise, t)
        noisy = noised.noisy
        targets.append(noised.target)  # the training target: the noise itself for epsilon prediction
        for name, unet in unets.items():
            out = []
            for i in range(0, n, cfg.batch_size):
                cond = {} if emb is None else {"encoder_hidden_states": emb[i : i + cfg.batch_size].to(device)}
                out.append(unet(noisy[i : i + cfg.batch_size].to(device), t[i : i + cfg.batch_size].to(device),
                                **cond).sample.float().cpu())
            preds[name].append(torch.cat(out))
    rng = np.random.default_rng(seed)
    rows = []
    params = {name: count_parameters(unet) for name, unet in unets.items()}
    for name in unets:
        for target in ("noise", "teacher") if name != "teacher" else ("noise",):
            per_bucket = []
            for b in range(len(buckets)):
                ref = targets[b] if target == "noise" else preds["teacher"][b]
                per_bucket.append(((preds[name][b] - ref) ** 2).mean(dim=(1, 2, 3)).numpy())
            # bucket -1: every bucket at once, the mean over buckets per image (so its CI is over images too)
            for b, err in [*enumerate(per_bucket), (-1, np.mean(per_bucket, axis=0))]:
                lo, hi = (0, buckets[-1][1]) if b < 0 else buckets[b]
                ci = bootstrap_ci(err, rng, n_boot)
                rows.append({"model": name, "factor": 1.0 if name == "teacher" else factors.get(name, float("nan")),
                             "params": params[name], "bucket": b, "t_low": lo, "t_high": hi - 1,
                             "target": target, "mse": float(err.mean()), "ci_low": ci[0], "ci_high": ci[1], "n": n})
    table = pd.DataFrame(rows, columns=TIMESTEP_SCHEMA.names)
    if out_path is not None:
        write_parquet(table, out_path, TIMESTEP_SCHEMA, "metrics/timestep_mse",
                      {"teacher": teacher, "students": students, "images": n, "buckets": cfg.buckets, "seed": seed,
                       "prediction_type": diffusion.prediction_type, "ci": "percentile bootstrap 95% over images"})
    return table
