"""Adapter: rule step_latency -> kd_core.metrics.step_latency.step_latency (interleaved latency per image)."""

from kd_core.config import build
from kd_core.generate import GenerationConfig
from kd_core.metrics.step_latency import step_latency
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    models = {name: (source, build(GenerationConfig, generation)) for name, (source, generation) in p.models.items()}
    step_latency(models, p.reference, p.settings["rounds"], p.settings["warmup"], snakemake.output[0], seed=p.seed)
