"""Adapter: rule figure_metrics -> kd_core.figures.plots.metric_figures."""

from kd_core.figures.plots import metric_figures
from kd_core.metrics.stats import per_image_table
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    inp, out = snakemake.input, snakemake.output
    per_image = per_image_table([inp.pairwise], list(inp.attributes), [inp.alignment] if inp.alignment else [])
    metric_figures(inp.summary, per_image, out.bars, out.radar, out.distributions)
