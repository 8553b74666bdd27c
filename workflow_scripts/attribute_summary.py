"""Adapter: rule attribute_summary -> kd_core.world.classifier.summarize_accuracy."""

from kd_core.runlog import job
from kd_core.world.classifier import summarize_accuracy

with job(snakemake.log[0], snakemake.threads) as log:
    table = summarize_accuracy(list(snakemake.input), snakemake.output[0], seed=snakemake.params.seed,
                               n_boot=snakemake.params.bootstrap)
    log.info("attribute accuracy (bootstrap 95%% CI):\n%s", table.to_string(index=False))
