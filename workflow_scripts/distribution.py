"""Adapter: rule distribution -> kd_core.metrics.distribution.evaluate_distributions."""

from pathlib import Path

import pandas as pd

from kd_core.config import build
from kd_core.metrics.distribution import FeatureConfig, evaluate_distributions, folder_images
from kd_core.runlog import job
from kd_core.seeding import resolve_device

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu):
    p = snakemake.params
    cfg = build(FeatureConfig, p.features, model=p.model, device=str(resolve_device(p.device)), seed=p.seed)
    if "real" in snakemake.input.keys():  # the shapes world's rendered held-out images
        world = pd.read_parquet(snakemake.input.real)
        real = [Path(snakemake.input.real).parent / f for f in world.loc[world["split"] == "test", "image"]]
    else:
        real = folder_images(p.features["real_images"]) if p.features["real_images"] else None
    evaluate_distributions(dict(zip(p.models, snakemake.input.manifests, strict=True)), cfg, snakemake.output[0], real)
