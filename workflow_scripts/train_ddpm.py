"""Adapter: rule train_ddpm -> kd_core.train.ddpm.train_ddpm (a pixel or latent DDPM teacher from scratch)."""

from pathlib import Path

from kd_core.config import build
from kd_core.runlog import job
from kd_core.train.ddpm import DDPMConfig, train_ddpm
from kd_core.train.loop import TrainConfig

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    p = snakemake.params
    result = train_ddpm(p.vae, p.data, snakemake.output.model, Path(snakemake.output.loss).parent,
                        build(DDPMConfig, p.ddpm["model"]), build(TrainConfig, p.ddpm["train"], seed=p.seed))
    log.info("trained %d steps; best validation loss %.5f at step %s; early stop %s", result.steps, result.best_val,
             result.best_step, result.stopped_early)
