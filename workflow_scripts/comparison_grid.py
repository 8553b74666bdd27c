"""Adapter: rule comparison_grid -> kd_core.figures.comparisons.prompt_filler_grid."""

from kd_core.figures.comparisons import prompt_filler_grid
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    prompt_filler_grid([snakemake.input.main, snakemake.input.filler], snakemake.output.png, snakemake.params.blocks)
