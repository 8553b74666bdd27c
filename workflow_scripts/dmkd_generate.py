"""Adapter: rule dmkd_generate -> kd_core.generate.generate_images (class prompts, one guidance scale)."""

from pathlib import Path

import pandas as pd

from kd_core.config import build
from kd_core.generate import GenerationConfig, generate_images
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu):
    # params.generation identifies the images; params.runtime (the batch size) does not
    cfg = build(GenerationConfig, {**snakemake.params.generation, **snakemake.params.runtime.values})
    generate_images(snakemake.params.source, pd.read_parquet(snakemake.input.prompts), Path(snakemake.output.manifest).parent,
                    cfg, f"dmkd_{snakemake.wildcards.dmkd_set}", {"code_hash": snakemake.params.code})
