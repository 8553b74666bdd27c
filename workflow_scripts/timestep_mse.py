"""Adapter: rule timestep_mse -> kd_core.metrics.timestep.timestep_mse (teacher's eval images)."""

from kd_core.captions import DataConfig
from kd_core.config import build
from kd_core.metrics.timestep import TimestepConfig, timestep_mse
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    p = snakemake.params
    table = timestep_mse(p.teacher, p.students, p.factors, DataConfig(source=snakemake.input.eval, split="eval"),
                         snakemake.output[0], build(TimestepConfig, p.settings), p.seed, p.bootstrap)
    vs = table[table["target"] == "teacher"].pivot_table(index="model", columns="bucket", values="mse")
    log.info("MSE to the teacher per timestep bucket:\n%s", vs.to_string(float_format="%.4g"))
