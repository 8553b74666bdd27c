"""Adapter: rule step_distill_summary -> kd_core.metrics.step_distill.step_distill_summary."""

from kd_core.metrics.step_distill import step_distill_summary
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    i, p = snakemake.input, snakemake.params
    step_distill_summary(dict(p.students), dict(p.teachers), p.teacher, p.full_steps, list(i.pairwise),
                         list(i.get("attributes", [])), list(i.get("alignment", [])), i.latency, i.get("distribution"),
                         snakemake.output[0], seed=p.seed, n_boot=p.bootstrap)
