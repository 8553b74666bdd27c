"""LoRA knowledge transfer: a student (a configured model, ``lora.student``) LoRA-tuned on the
teacher's images or a caption dataset, then sampled as the model ``lora_student`` (its base
student's settings, with the adapter). Training: kd_core.train.lora; rules: rules/lora.smk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.errors import ConfigError
from kd_core.models.folders import example_targets, missing_targets, weight_modules
from kd_core.sources import is_built
from kd_core.studies.base import Study


class LoRA(Study):
    key = "lora"
    order = 10
    config_class = "kd_core.train.lora:LoRAConfig"

    @property
    def models(self) -> list[str]:
        return ["lora_student"]

    @property
    def student(self) -> dict[str, Any]:
        """The configured model the adapter is trained on."""
        return self.config["models"][self.cfg["student"]]

    def model_entry(self, name: str) -> dict[str, Any]:
        """The base student with the trained adapter."""
        base = self.student
        return {**base, "generation": {**base["generation"], "lora": self.adapter}}

    @property
    def adapter(self) -> str:
        return f"{self.out}/models/lora_student"

    @property
    def student_source(self) -> str:
        return self.plan.model_dir(self.student["source"])

    def inputs(self) -> dict[str, Any]:
        """The training images' manifest (data: teacher) and the student's folder when the workflow builds it."""
        source = self.student["source"]
        return self.with_data({"model": self.plan.model_dir(source)} if is_built(source) else {})

    def loss_tables(self) -> dict[str, str]:
        return {"LoRA": f"{self.out}/train/lora/loss.parquet"}

    def check(self, folders: dict[str, Path | None], grammar: Any) -> None:
        cfg, models = self.cfg, self.config["models"]
        if cfg["student"] not in models or cfg["student"] == "teacher":
            raise ConfigError(f"config key 'lora.student' is {cfg['student']!r}; choose a student among "
                              f"{[m for m in models if m != 'teacher']}")
        config_checks.training_data(self.config, self.key)
        self._check_targets(folders[cfg["student"]])

    def _check_targets(self, folder: Path | None) -> None:
        """Every LoRA target names a module of the student (read from its weights' headers when its
        files are here; a model the workflow builds is checked by train_lora before it trains)."""
        if folder is None:
            return
        parts = [("unet", "lora.unet_targets", self.cfg["unet_targets"])]
        if self.cfg["text_encoder"]:
            parts += [(te, "lora.text_targets", self.cfg["text_targets"]) for te in ("text_encoder", "text_encoder_2")
                      if (folder / te).is_dir()]
        for part, key, targets in parts:
            modules = weight_modules(folder / part)
            missing = missing_targets(modules, targets)
            if missing:
                raise ConfigError(f"config key '{key}' has {missing}, which name no module of the student's {part} "
                                  f"({folder / part}); use module names such as {example_targets(modules)}")

    def image_sizes(self) -> list[tuple[str, str, int | None]]:
        return [(self.cfg["student"], "lora.resolution", self.cfg["resolution"])]
