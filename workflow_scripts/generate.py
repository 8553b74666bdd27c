"""Adapter: rule generate (or generate_shard) -> kd_core.generate.generate_images."""

from pathlib import Path

import pandas as pd

from kd_core.config import build
from kd_core.generate import GenerationConfig, generate_images
from kd_core.runlog import job
from kd_core.shards import Shard

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu):
    prompts = pd.read_parquet(snakemake.input.prompts)
    # params.generation identifies the images; params.runtime (the batch size) does not
    cfg = build(GenerationConfig, {**snakemake.params.generation, **snakemake.params.runtime.values})
    shard = Shard.parse(snakemake.wildcards.shard) if "shard" in snakemake.wildcards.keys() else None
    out_dir = Path(snakemake.output.manifest).parent
    generate_images(snakemake.params.source, prompts, out_dir.parent if shard else out_dir, cfg,
                    snakemake.wildcards.model, {"code_hash": snakemake.params.code}, shard, snakemake.wildcards.split)
