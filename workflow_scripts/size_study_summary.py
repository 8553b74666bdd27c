"""Adapter: rule size_study_summary -> kd_core.metrics.size_study.size_study_summary."""

from kd_core.metrics.size_study import size_study_summary
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    i = snakemake.input
    p = snakemake.params
    table = size_study_summary(i.timestep, i.trajectory, i.get("efficiency"), i.get("distribution"), p.factors,
                               snakemake.output[0], latency=i.latency, attributes=i.get("attributes", []), init=p.init,
                               n_boot=p.bootstrap, seed=p.seed)
    log.info("\n%s\n%s", table.to_string(index=False), {k: round(v, 4) for k, v in table.attrs.items() if isinstance(v, float)})
