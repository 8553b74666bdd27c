"""Width-factor students of the model-size study, distilled from one teacher U-Net.

A student is the teacher's U-Net with every stage's width scaled by ``factor``, initialised with
the teacher's most important channels (``init: teacher``,
:func:`kd_core.models.width.build_inherited_student`: width pruning, then distillation; at factor 1
the student starts as the teacher) or at random (``init: random``, the size-analysis reference's
setting, :func:`kd_core.models.width.build_width_student`), and learns on noised latents of
the training images with

    loss = w_task * MSE(student noise, true noise) + w_out * MSE(student output, teacher output)

(task loss + output-level KD, as the size-analysis toolkit distils its students; widths differ
from the teacher's, so there is no feature-level term). The loop, caching, checkpoints, resume and
the saved pipeline folder are those of :func:`kd_core.train.distill.distill_unet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kd_core.captions import DataConfig
from kd_core.errors import KDError
from kd_core.models.width import build_inherited_student, build_width_student
from kd_core.train.distill import distill_unet
from kd_core.train.loop import TrainConfig, TrainResult


@dataclass(frozen=True)
class SizeStudyConfig:
    factor: float = 0.5
    init: str = "teacher"  # teacher: the teacher's most important channels; random: a fresh network
    w_task: float = 1.0
    w_out: float = 1.0
    resolution: int | None = None  # training size in px; None: the teacher's native size
    val_fraction: float = 0.1
    teacher_dtype: str = "auto"  # auto: fp16 on GPU, fp32 on CPU
    w_feat: float = 0.0  # no feature-level KD between different widths
    feature_kd: bool = False


def train_width_student(teacher: str, data: DataConfig, out_dir: str | Path, run_dir: str | Path, cfg: SizeStudyConfig,
                        train: TrainConfig) -> TrainResult:
    """Distil the U-Net of ``teacher`` into its ``cfg.factor``-wide student on ``data``; save a pipeline folder."""
    if cfg.init not in ("teacher", "random"):
        raise KDError(f"size_study.init is {cfg.init!r}; use teacher or random")

    def student(t_unet):
        if cfg.init == "teacher":
            return build_inherited_student(t_unet, cfg.factor)
        return build_width_student(t_unet, cfg.factor, train.seed)

    return distill_unet(teacher, data, out_dir, run_dir, cfg, train, student,
                        name=f"width {cfg.factor:g}", info_file="size_study.json", info={"size_study": asdict(cfg)})
