"""Adapter: rule generate -> kd_core.generate.generate_images."""

from pathlib import Path

import pandas as pd

from kd_core.config import build
from kd_core.generate import GenerationConfig, generate_images
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    prompts = pd.concat([pd.read_parquet(f) for k, f in snakemake.input.items() if k.startswith("prompts_")])
    cfg = build(GenerationConfig, snakemake.params.generation)
    generate_images(snakemake.params.source, prompts, Path(snakemake.output.manifest).parent, cfg,
                    snakemake.wildcards.model, {"code_hash": snakemake.params.code})
