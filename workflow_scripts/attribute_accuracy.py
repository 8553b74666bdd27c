"""Adapter: rule attribute_accuracy -> kd_core.world.classifier.attribute_accuracy, once per model."""

from pathlib import Path

from kd_core.runlog import job
from kd_core.world.classifier import attribute_accuracy

with job(snakemake.log[0], snakemake.threads):
    for model, manifest, out in zip(snakemake.params.models, snakemake.input.manifests, snakemake.output, strict=True):
        attribute_accuracy(manifest, Path(snakemake.input.classifier).parent, out, model)
