"""Adapter: rule train_lora -> kd_core.train.lora.train_lora (with gpu=N > 1: in N DDP processes)."""

from pathlib import Path

from kd_core.captions import DataConfig
from kd_core.config import build
from kd_core.launch import launch_processes
from kd_core.runlog import job
from kd_core.train.loop import TrainConfig
from kd_core.train.lora import LoRAConfig, train_lora

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    if not launch_processes(__file__, snakemake.resources.gpu):  # this process trains (alone, or as one rank)
        p = snakemake.params.lora
        data = build(DataConfig, p, source=snakemake.params.data, split="train" if p["data"] == "teacher" else None)
        result = train_lora(snakemake.params.student, data, snakemake.output.adapter, Path(snakemake.output.loss).parent,
                            build(LoRAConfig, p), build(TrainConfig, p["train"], seed=snakemake.params.seed))
        log.info("trained %d steps (best step %s, early stop %s)", result.steps, result.best_step, result.stopped_early)
