"""Adapter: rules size_latency, block_kd_latency -> kd_core.metrics.latency.denoiser_latency (interleaved U-Net step timing)."""

from kd_core.config import build
from kd_core.metrics.latency import LatencyConfig, denoiser_latency
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    p = snakemake.params
    table = denoiser_latency(p.teacher, p.students, p.factors, build(LatencyConfig, p.settings, guidance_scale=p.guidance),
                             snakemake.output[0], p.seed, p.bootstrap)
    log.info("U-Net step latency (ms, median over rounds) and GFLOPs:\n%s",
             table.pivot_table(index="model", columns="batch_size", values=["step_ms", "gflops"]).to_string(float_format="%.4g"))
