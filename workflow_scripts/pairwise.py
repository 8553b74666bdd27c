"""Adapter: rule pairwise (or pairwise_shard) -> kd_core.metrics.pairwise.pairwise_metrics."""

from kd_core.metrics.pairwise import pairwise_metrics
from kd_core.runlog import job
from kd_core.shards import Shard

with job(snakemake.log[0], snakemake.threads):
    shard = Shard.parse(snakemake.wildcards.shard) if "shard" in snakemake.wildcards.keys() else None
    pairwise_metrics(snakemake.input.manifest, snakemake.input.reference, snakemake.output[0],
                     snakemake.wildcards.model, "teacher", workers=snakemake.threads, shard=shard)
