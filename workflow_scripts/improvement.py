"""Adapter: rule improvement -> kd_core.metrics.stats.improvement_table."""

from kd_core.metrics.stats import improvement_table
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    inp = snakemake.input
    table = improvement_table([inp.pairwise], list(inp.attributes), snakemake.params.baseline, snakemake.output[0],
                              seed=snakemake.params.seed, alignment=[inp.alignment] if inp.alignment else [],
                              n_boot=snakemake.params.bootstrap)
    log.info("each student against %s (bootstrap 95%% CI of the paired difference):\n%s",
             snakemake.params.baseline, table.to_string(index=False))
