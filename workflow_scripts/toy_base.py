"""Adapter: rule toy_base -> kd_core.world.toy.pretrain_toy_base."""

from pathlib import Path

from kd_core.config import build
from kd_core.runlog import job
from kd_core.world.toy import ToyConfig, pretrain_toy_base

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = build(ToyConfig, snakemake.params.toy, grammars=tuple(snakemake.params.grammars), seed=snakemake.params.seed)
    seconds = pretrain_toy_base(snakemake.input.table, snakemake.output.model, Path(snakemake.output.loss).parent, cfg)
    log.info("VAE and encodings: %.0f s", seconds)
