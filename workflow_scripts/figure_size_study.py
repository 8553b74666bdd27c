"""Adapter: rule figure_size_study -> kd_core.figures.size_study (heatmap, trajectory, denoising grid, cost, quality)."""

from kd_core.figures import size_study as fig
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    i, o = snakemake.input, snakemake.output
    fig.heatmap(i.timestep, o.heatmap)
    fig.trajectory_plot(i.trajectory, o.trajectory)
    fig.denoising_grid(i.images, o.denoising)
    summary = fig.load_summary(i.summary)
    fig.cost_plot(summary, o.cost)
    fig.quality_plot(summary, o.quality)
