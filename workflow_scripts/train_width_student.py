"""Adapter: rule train_width_student -> kd_core.train.size_study.train_width_student (with gpu=N > 1: in N DDP processes)."""

from pathlib import Path

from kd_core.captions import DataConfig
from kd_core.config import build
from kd_core.launch import launch_processes
from kd_core.runlog import job
from kd_core.train.loop import TrainConfig
from kd_core.train.size_study import SizeStudyConfig, train_width_student

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    if not launch_processes(__file__, snakemake.resources.gpu):  # this process trains (alone, or as one rank)
        p = snakemake.params.size
        data = build(DataConfig, p, source=snakemake.params.data, split="train" if p["data"] == "teacher" else None)
        result = train_width_student(snakemake.params.teacher, data, snakemake.output.model,
                                     Path(snakemake.output.loss).parent,
                                     build(SizeStudyConfig, p, factor=snakemake.params.factor, init=snakemake.params.init),
                                     build(TrainConfig, p["train"], seed=snakemake.params.seed))
        log.info("trained %d steps (best step %s, early stop %s)", result.steps, result.best_step, result.stopped_early)
