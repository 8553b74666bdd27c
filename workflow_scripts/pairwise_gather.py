"""Adapter: rule pairwise_gather -> kd_core.metrics.pairwise.gather_tables."""

from kd_core.metrics.pairwise import PAIRWISE_SCHEMA, gather_tables
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    gather_tables(list(snakemake.input), snakemake.output[0], PAIRWISE_SCHEMA, "metrics/pairwise")
