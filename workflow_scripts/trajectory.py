"""Adapter: rule trajectory -> kd_core.metrics.trajectory.trajectories (eval prompts)."""

import pandas as pd

from kd_core.config import build
from kd_core.metrics.trajectory import TrajectoryConfig, trajectories
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu):
    p = snakemake.params
    trajectories(p.teacher, p.students, p.factors, pd.read_parquet(snakemake.input.prompts), snakemake.output.table,
                 snakemake.output.images, build(TrajectoryConfig, p.settings), p.seed, p.bootstrap)
