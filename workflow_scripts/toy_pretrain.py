"""Adapter: rule toy_pretrain -> kd_core.world.toy.pretrain_toy_models."""

from kd_core.config import build
from kd_core.runlog import job
from kd_core.world.toy import ToyConfig, pretrain_toy_models

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = build(ToyConfig, snakemake.params.toy, grammars=tuple(snakemake.params.grammars), seed=snakemake.params.seed)
    times = pretrain_toy_models(snakemake.input.table, snakemake.output.teacher, snakemake.output.student,
                                snakemake.output.loss, cfg)
    log.info("wall time per model (s): %s", times)
