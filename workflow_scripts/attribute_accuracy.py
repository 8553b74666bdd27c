"""Adapter: rule attribute_accuracy -> kd_core.world.classifier.attribute_accuracy."""

from pathlib import Path

from kd_core.runlog import job
from kd_core.world.classifier import attribute_accuracy

with job(snakemake.log[0], snakemake.threads):
    attribute_accuracy(snakemake.input.manifest, Path(snakemake.input.classifier).parent, snakemake.output[0],
                       snakemake.wildcards.model)
