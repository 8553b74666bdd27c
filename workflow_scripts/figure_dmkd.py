"""Adapter: rule figure_dmkd -> kd_core.figures.dmkd (accuracy panels, per-epoch curves)."""

from kd_core.figures.dmkd import accuracy_figure, curves_figure
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    accuracy_figure(snakemake.input.table, snakemake.output.accuracy)
    curves_figure(dict(zip(snakemake.params.runs, snakemake.input.losses, strict=True)), snakemake.output.curves)
