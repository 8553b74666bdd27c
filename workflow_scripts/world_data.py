"""Adapter: rule world_data -> kd_core.world.dataset.make_world_split (one split)."""

from kd_core.runlog import job
from kd_core.world.dataset import WorldDataConfig, make_world_split

with job(snakemake.log[0], snakemake.threads):
    w = snakemake.params.world
    cfg = WorldDataConfig(grammar=snakemake.params.grammar, seed=snakemake.params.seed, **w)
    make_world_split(cfg, snakemake.wildcards.world_split, snakemake.output.table)
