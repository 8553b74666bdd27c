"""Adapter: rule improvement -> kd_core.metrics.stats.improvement_table."""

from kd_core.metrics.stats import improvement_table
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    table = improvement_table(list(snakemake.input.pairwise), list(snakemake.input.attributes), snakemake.params.baseline,
                              snakemake.output[0], seed=snakemake.params.seed)
    log.info("each student against %s (bootstrap 95%% CI of the paired difference):\n%s",
             snakemake.params.baseline, table.to_string(index=False))
