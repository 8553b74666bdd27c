"""Adapter: rule toy_unet -> kd_core.world.toy.pretrain_toy_unet."""

from pathlib import Path

from kd_core.config import build
from kd_core.runlog import job
from kd_core.world.toy import ToyConfig, pretrain_toy_unet

with job(snakemake.log[0], snakemake.threads) as log:
    role = snakemake.wildcards.role
    cfg = build(ToyConfig, {role: snakemake.params.unet}, seed=snakemake.params.seed)
    seconds = pretrain_toy_unet(snakemake.input.base, role, snakemake.output.model,
                                Path(snakemake.output.loss).parent, cfg)
    log.info("toy %s U-Net: %.0f s", role, seconds)
