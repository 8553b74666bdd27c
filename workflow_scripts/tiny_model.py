"""Adapter: rule tiny_model -> kd_core.models.tiny (random-weight SD 1.x / SDXL pipelines)."""

from kd_core.models.tiny import TINY_BUILDERS
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    TINY_BUILDERS[snakemake.wildcards.kind](snakemake.output[0], seed=snakemake.params.seed)
