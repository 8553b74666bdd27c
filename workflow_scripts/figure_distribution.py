"""Adapter: rule figure_distribution -> kd_core.figures.plots.distribution_bars."""

from kd_core.figures.plots import distribution_bars
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    distribution_bars(snakemake.input[0], snakemake.output.png)
