"""Adapter: rule toy_teacher_xl -> kd_core.world.toy_xl.pretrain_toy_teacher_xl."""

from pathlib import Path

from kd_core.config import build
from kd_core.runlog import job
from kd_core.world.toy_xl import ToyXLConfig, pretrain_toy_teacher_xl

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = build(ToyXLConfig, {"unet": snakemake.params.unet, "text_2": snakemake.params.text_2}, seed=snakemake.params.seed)
    seconds = pretrain_toy_teacher_xl(snakemake.input.base, snakemake.input.table, snakemake.output.model,
                                      Path(snakemake.output.loss).parent, cfg)
    log.info("toy SDXL-style teacher U-Net: %.0f s", seconds)
