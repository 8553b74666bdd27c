"""Block distillation (BK-SDM; Kim et al. 2023): a block-removed student U-Net learns from the
full teacher U-Net with

    loss = w_task * MSE(student noise, true noise)                      (task loss)
         + w_out  * MSE(student output, teacher output)                 (output-level KD)
         + w_feat * sum_l MSE(student block l output, teacher block l)  (feature-level KD)

on noised latents of the training images. Block outputs are collected by forward hooks through
the explicit teacher-to-student map of :func:`kd_core.models.bk_sdm.feature_map`, registered on the
unwrapped modules, so that the student may be wrapped by accelerate (DDP) for several processes.
The teacher is frozen, in half precision on GPU, and kept out of ``accelerator.prepare``. BK-SDM
weighs the terms 1 / 1 / 1; segmind's small-sd / tiny-sd used 1 / 0.5 / 0.5. Every term goes to
``loss.parquet`` raw (``task``, ``out_kd``, ``feat_kd``) and weighted (``*_weighted``).

The trained student U-Net, with the teacher's VAE, text encoder(s), tokenizer(s) and scheduler, is
saved as a pipeline folder that ``DiffusionPipeline.from_pretrained`` loads. An SDXL teacher's
students (``ssd_1b``, ``vega``, ``koala_1b``, ``koala_700m``) learn with SDXL's micro-conditioning,
as its pipeline passes it, and are ``StableDiffusionXLPipeline`` folders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kd_core.captions import DataConfig
from kd_core.models.bk_sdm import build_student, feature_map
from kd_core.train.distill import distill_unet
from kd_core.train.loop import TrainConfig, TrainResult


@dataclass(frozen=True)
class BlockKDConfig:
    level: str = "bk_small"  # bk_base | bk_small | bk_tiny (SD 1.x); ssd_1b | vega | koala_1b | koala_700m (SDXL)
    w_task: float = 1.0
    w_out: float = 1.0
    w_feat: float = 1.0
    feature_kd: bool = True  # False: the ablation without the feature term
    features: str = "blocks"  # blocks (every stage's output) | self_attention (every kept transformer's, KOALA)
    resolution: int | None = None  # training size in px; None: the teacher's native size
    val_fraction: float = 0.1
    teacher_dtype: str = "auto"  # auto: fp16 on GPU, fp32 on CPU


def train_block_kd(teacher: str, data: DataConfig, out_dir: str | Path, run_dir: str | Path, cfg: BlockKDConfig,
                   train: TrainConfig) -> TrainResult:
    """Distil the U-Net of ``teacher`` (hub id or folder) into its ``cfg.level`` student on ``data``."""
    return distill_unet(teacher, data, out_dir, run_dir, cfg, train, lambda t_unet: build_student(t_unet, cfg.level),
                        lambda t_unet, student: feature_map(t_unet, student, cfg.level, cfg.features), name=cfg.level,
                        info_file="block_kd.json", info={"block_kd": asdict(cfg)})
