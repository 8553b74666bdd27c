"""Adapter: rule summary -> kd_core.metrics.stats.summarize over every per-image table."""

from kd_core.metrics.stats import per_image_table, summarize
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    inp = snakemake.input
    long = per_image_table([inp.pairwise], list(inp.attributes), [inp.alignment] if inp.alignment else [])
    table = summarize(long, snakemake.output[0], seed=snakemake.params.seed, n_boot=snakemake.params.bootstrap)
    log.info("per model and metric (bootstrap 95%% CI of the mean):\n%s", table.to_string(index=False))
