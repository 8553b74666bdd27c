"""Adapter: rule efficiency -> kd_core.metrics.efficiency.efficiency_table (all models, one process)."""

from kd_core.config import build
from kd_core.generate import GenerationConfig
from kd_core.metrics.efficiency import EfficiencyConfig, efficiency_table
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    models = {name: (source, build(GenerationConfig, gen)) for name, (source, gen) in snakemake.params.models.items()}
    table = efficiency_table(models, build(EfficiencyConfig, snakemake.params.efficiency), snakemake.output[0],
                             {"code_hash": snakemake.params.code})
    log.info("efficiency:\n%s", table.pivot_table(index="metric", columns="model", values="value").to_string())
