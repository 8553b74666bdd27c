"""Adapter: rule train_step_distill -> kd_core.train.step_distill.train_step_distill (with gpu=N > 1: in N DDP processes)."""

from pathlib import Path

from kd_core.captions import DataConfig
from kd_core.config import build
from kd_core.launch import launch_processes
from kd_core.runlog import job
from kd_core.train.loop import TrainConfig
from kd_core.train.step_distill import StepDistillConfig, train_step_distill

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    if not launch_processes(__file__, snakemake.resources.gpu):  # this process trains (alone, or as one rank)
        p = snakemake.params.step_distill
        data = build(DataConfig, p, source=snakemake.params.data, split="train" if p["data"] == "teacher" else None)
        result = train_step_distill(snakemake.params.teacher, data, snakemake.output.model,
                                    Path(snakemake.output.loss).parent, build(StepDistillConfig, p),
                                    build(TrainConfig, p["train"], seed=snakemake.params.seed))
        log.info("trained %d steps (best step %s, early stop %s)", result.steps, result.best_step, result.stopped_early)
