"""Adapter: rule block_kd_summary -> kd_core.metrics.block_kd.block_kd_summary."""

from kd_core.metrics.block_kd import block_kd_summary
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    i, p = snakemake.input, snakemake.params
    block_kd_summary(dict(p.students), "teacher", p.base, list(i.pairwise), list(i.get("attributes", [])),
                     list(i.get("alignment", [])), i.latency, snakemake.output[0], seed=p.seed, n_boot=p.bootstrap)
