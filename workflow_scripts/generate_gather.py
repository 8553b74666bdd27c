"""Adapter: rule generate (sharded) -> kd_core.generate.gather_manifests."""

import pandas as pd

from kd_core.generate import gather_manifests
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    prompts = pd.read_parquet(snakemake.input.prompts)
    shards = [f for k, f in snakemake.input.items() if k.startswith("shard_")]
    gather_manifests(shards, prompts, snakemake.output.manifest)
