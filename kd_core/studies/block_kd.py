"""BK-SDM block distillation: the teacher's U-Net distilled into block-removed students (task +
output-KD + feature-KD losses), one per ``block_kd.levels`` entry and, with ``ablate_features``,
``<level>_nofeat`` trained without the feature term; each sampled like the teacher. Training:
kd_core.train.block_kd; students: kd_core.models.bk_sdm; rules: rules/block_kd.smk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.errors import ConfigError, KDError
from kd_core.models.bk_configs import student_config
from kd_core.studies.base import Study

ABLATION = "_nofeat"


class BlockKD(Study):
    key = "block_kd"
    order = 20
    config_class = "kd_core.train.block_kd:BlockKDConfig"
    samples_images = True

    @property
    def models(self) -> list[str]:
        """One student per level, then ``<level>_nofeat`` for the feature-KD ablation."""
        levels = self.cfg["levels"]
        return levels + ([f"{lv}{ABLATION}" for lv in levels] if self.cfg["ablate_features"] else [])

    def model_entry(self, name: str) -> dict[str, Any]:
        return self.sampled_like_teacher(name)

    @staticmethod
    def settings(name: str) -> dict[str, Any]:
        """The level and the ablation flag of a student's name."""
        return {"level": name.removesuffix(ABLATION), "feature_kd": not name.endswith(ABLATION)}

    def inputs(self) -> dict[str, Any]:
        return self.with_data({"teacher": self.plan.built_input(self.plan.teacher["source"])})

    def loss_tables(self) -> dict[str, str]:
        return {f"BK-SDM {m}": f"{self.out}/train/{m}/loss.parquet" for m in self.models}

    def wildcards(self) -> dict[str, str]:
        return {"bk": "|".join(self.models)}

    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        config_checks.training_data(self.config, self.key)
        teacher = folders.get("teacher")  # a local folder or a cached snapshot: its U-Net's config is here
        unet = teacher / "unet" / "config.json" if teacher is not None else None
        if unet is not None and unet.is_file():
            config = json.loads(unet.read_text())
            for level in self.cfg["levels"]:
                try:
                    student_config(config, level)
                except KDError as e:
                    raise ConfigError(f"config key 'block_kd.levels' has {level!r}, which the teacher "
                                      f"{self.config['models']['teacher']['source']} cannot give: {e}") from None

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        return self.teacher_resolution()
