"""Adapter: rule alignment_gather -> kd_core.metrics.tables.gather_tables."""

from kd_core.metrics.alignment import ALIGNMENT_SCHEMA
from kd_core.metrics.tables import gather_tables
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    gather_tables(list(snakemake.input), snakemake.output[0], ALIGNMENT_SCHEMA, "metrics/alignment")
