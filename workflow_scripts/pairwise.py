"""Adapter: rule pairwise -> kd_core.metrics.pairwise.pairwise_metrics."""

from kd_core.metrics.pairwise import pairwise_metrics
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    pairwise_metrics(snakemake.input.manifest, snakemake.input.reference, snakemake.output[0],
                     snakemake.wildcards.model, "teacher", workers=snakemake.threads)
