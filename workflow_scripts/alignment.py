"""Adapter: rule alignment -> kd_core.metrics.alignment.clip_score_table."""

from kd_core.metrics.alignment import clip_score_table
from kd_core.runlog import job
from kd_core.seeding import resolve_device

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu):
    clip_score_table(snakemake.input.manifest, snakemake.output[0], snakemake.wildcards.model, snakemake.params.clip,
                     str(resolve_device(snakemake.params.device)))
