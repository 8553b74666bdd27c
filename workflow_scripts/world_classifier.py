"""Adapter: rule world_classifier -> kd_core.world.classifier.train_attribute_classifier."""

from pathlib import Path

from kd_core.config import build
from kd_core.runlog import job
from kd_core.world.classifier import AttributeClassifierConfig, train_attribute_classifier
from kd_core.world.render import DEFAULTS

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = build(AttributeClassifierConfig, snakemake.params.classifier, seed=snakemake.params.seed)
    acc = train_attribute_classifier(Path(snakemake.input.train).parent, Path(snakemake.output.model).parent, cfg, list(DEFAULTS),
                           snakemake.params.image_size)
    log.info("held-out accuracy:\n%s", acc.to_string(index=False))
