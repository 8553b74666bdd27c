"""Adapter: rule figure_efficiency -> kd_core.figures.plots.efficiency_plot."""

from kd_core.figures.plots import efficiency_plot
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    efficiency_plot(snakemake.input.efficiency, snakemake.input.summary, snakemake.output.png)
