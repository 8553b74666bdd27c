"""Adapter: rule pairwise_gather -> kd_core.metrics.tables.gather_tables."""

from kd_core.metrics.tables import PER_IMAGE_SCHEMA, gather_tables
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    gather_tables(list(snakemake.input), snakemake.output[0], PER_IMAGE_SCHEMA, "metrics/pairwise")
