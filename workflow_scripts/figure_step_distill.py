"""Adapter: rule figure_step_distill -> kd_core.figures.step_distill (quality against steps, against latency)."""

from kd_core.figures import step_distill as fig
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    fig.steps_plot(snakemake.input[0], snakemake.output.steps, snakemake.params.full_steps)
    fig.latency_plot(snakemake.input[0], snakemake.output.latency)
