"""Adapter: rule figure_loss -> kd_core.figures.plots.loss_curves (every run, every term)."""

from kd_core.figures.plots import loss_curves
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    loss_curves(dict(snakemake.input.items()), snakemake.output.png)
