"""Adapter: rule comparison_models -> kd_core.figures.comparisons.compare_models."""

from kd_core.figures.comparisons import compare_models
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    manifests = dict(zip(snakemake.params.models, snakemake.input, strict=True))
    compare_models(manifests, snakemake.output.side, snakemake.output.diff, snakemake.params.n)
