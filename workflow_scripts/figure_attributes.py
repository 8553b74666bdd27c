"""Adapter: rule figure_attributes -> kd_core.figures.plots.attribute_bars."""

from kd_core.figures.plots import attribute_bars
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    attribute_bars(snakemake.input[0], snakemake.output.png)
