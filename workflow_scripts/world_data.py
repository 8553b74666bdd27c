"""Adapter: rule world_data -> kd_core.world.dataset.make_real_dataset."""

from kd_core.runlog import job
from kd_core.world.dataset import WorldDataConfig, make_real_dataset

with job(snakemake.log[0], snakemake.threads):
    w = snakemake.params.world
    cfg = WorldDataConfig(grammar=snakemake.params.grammar, image_size=w["image_size"], n_train=w["n_train"],
                          n_test=w["n_test"], seed=snakemake.params.seed)
    make_real_dataset(cfg, snakemake.output.table)
