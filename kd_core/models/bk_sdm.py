"""Block-removed student U-Nets of BK-SDM (Kim et al. 2023, "BK-SDM: A Lightweight, Fast, and
Cheap Version of Stable Diffusion"; the segmind small-sd / tiny-sd work), derived from any SD 1.x
style teacher U-Net config:

- ``bk_base``: one residual + attention pair fewer in every down and up stage (SD 1.5: 2 -> 1 per
  down stage, 3 -> 2 per up stage);
- ``bk_small``: ``bk_base`` without the mid-block;
- ``bk_tiny``: ``bk_small`` without the innermost down and up stages.

The students are plain ``UNet2DConditionModel`` configs (``layers_per_block`` one lower: diffusers
gives up stages one layer more than down stages). Weights are copied from the teacher by an
explicit map (:func:`weight_map`): down stages keep their first layers, up stages drop their
second layer (the one that read the removed down layer's skip), and ``bk_tiny``'s up stages are
the teacher's shifted by one. Feature KD pairs block outputs by :func:`feature_map`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from kd_core.errors import KDError

LEVELS = ("bk_base", "bk_small", "bk_tiny")
#: The U-Net config of stable-diffusion-v1-5 (its public unet/config.json): the teacher of the
#: published BK-SDM students, for parameter counts and benchmarks with random weights.
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True,
    "freq_shift": 0, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                          "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
#: Config entries given per stage (down order) that lose their innermost entry in bk_tiny.
PER_STAGE = ("attention_head_dim", "num_attention_heads", "transformer_layers_per_block", "only_cross_attention",
             "cross_attention_dim", "reverse_transformer_layers_per_block")


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise KDError(f"unknown BK-SDM student {level!r}; choose one of {', '.join(LEVELS)}")


def student_config(teacher: Mapping[str, Any], level: str) -> dict[str, Any]:
    """The diffusers config of the ``level`` student of a teacher U-Net config."""
    _check_level(level)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in teacher.items() if not k.startswith("_")}
    layers = cfg["layers_per_block"]
    if not isinstance(layers, int) or layers < 2:
        raise KDError(f"BK-SDM students remove one layer per stage: the teacher needs layers_per_block >= 2 (an int), "
                      f"it has {layers!r}")
    cfg["layers_per_block"] = layers - 1
    if level in ("bk_small", "bk_tiny"):
        cfg["mid_block_type"] = None
    if level == "bk_tiny":
        n = len(cfg["block_out_channels"])
        if n < 2 or cfg["block_out_channels"][-1] != cfg["block_out_channels"][-2]:
            raise KDError("bk_tiny removes the innermost stage, so the teacher's two innermost stages must have the same "
                          f"width (SD 1.x: 1280, 1280); its widths are {cfg['block_out_channels']}")
        cfg["block_out_channels"] = cfg["block_out_channels"][:-1]
        cfg["down_block_types"] = cfg["down_block_types"][:-1]
        cfg["up_block_types"] = cfg["up_block_types"][1:]
        for key in PER_STAGE:
            if isinstance(cfg.get(key), list) and len(cfg[key]) == n:
                cfg[key] = cfg[key][:-1] if not key.startswith("reverse") else cfg[key][1:]
    return cfg


def build_student(teacher: UNet2DConditionModel, level: str, copy_weights: bool = True) -> UNet2DConditionModel:
    """The ``level`` student of ``teacher`` (same dtype), initialised from the teacher's weights."""
    student = UNet2DConditionModel.from_config(student_config(teacher.config, level))
    if student.dtype != teacher.dtype:
        student.to(dtype=teacher.dtype)
    if copy_weights:
        copy_teacher_weights(teacher, student, level)
    return student


_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)$")


def _teacher_key(key: str, level: str) -> str:
    """The teacher parameter that initialises student parameter ``key``."""
    m = _UP.match(key)
    if not m:
        return key  # conv_in, time embedding, down blocks (first layers kept), mid-block, conv_out
    block, kind, idx, rest = int(m[1]), m[2], int(m[3]), m[4]
    if level == "bk_tiny":
        block += 1  # the teacher's innermost up stage is gone
    if kind != "upsamplers" and idx >= 1:
        idx += 1  # the teacher's second up layer (the removed down layer's skip) is dropped
    return f"up_blocks.{block}.{kind}.{idx}.{rest}"


def weight_map(student: torch.nn.Module, level: str) -> dict[str, str]:
    """student parameter / buffer name -> teacher name, for every entry of the student's state dict."""
    _check_level(level)
    return {k: _teacher_key(k, level) for k in student.state_dict()}


@torch.no_grad()
def copy_teacher_weights(teacher: torch.nn.Module, student: torch.nn.Module, level: str) -> dict[str, str]:
    """Copy the mapped teacher weights into ``student``; every student entry must have a teacher source."""
    t_state, mapping = teacher.state_dict(), weight_map(student, level)
    new = {}
    for s_key, t_key in mapping.items():
        s_shape = student.state_dict()[s_key].shape
        if t_key not in t_state or t_state[t_key].shape != s_shape:
            got = tuple(t_state[t_key].shape) if t_key in t_state else "missing"
            raise KDError(f"BK-SDM weight map: student {s_key} {tuple(s_shape)} <- teacher {t_key} {got}")
        new[s_key] = t_state[t_key]
    student.load_state_dict(new, strict=True)
    return mapping


def _last_attention_or_resnet(unet: UNet2DConditionModel, block: int) -> str:
    down = unet.down_blocks[block]
    if getattr(down, "attentions", None) is not None and len(down.attentions):
        return f"down_blocks.{block}.attentions.{len(down.attentions) - 1}.proj_out"
    return f"down_blocks.{block}.resnets.{len(down.resnets) - 1}"


def feature_map(teacher: UNet2DConditionModel, student: UNet2DConditionModel, level: str) -> dict[str, str]:
    """Teacher module -> student module whose outputs feature KD matches (BK-SDM's choice).

    base / small: every down and up stage with its namesake. tiny: the outer down stages by name,
    the student's innermost (now last) down stage against the teacher's same stage at its last
    attention output (before the teacher's downsampler, which the student lacks), and student up
    stage k against teacher up stage k + 1.
    """
    _check_level(level)
    n_t, n_s = len(teacher.down_blocks), len(student.down_blocks)
    if level != "bk_tiny":
        pairs = {f"down_blocks.{i}": f"down_blocks.{i}" for i in range(n_t)}
        return pairs | {f"up_blocks.{i}": f"up_blocks.{i}" for i in range(n_t)}
    pairs = {f"down_blocks.{i}": f"down_blocks.{i}" for i in range(n_s - 1)}
    pairs[_last_attention_or_resnet(teacher, n_s - 1)] = _last_attention_or_resnet(student, n_s - 1)
    return pairs | {f"up_blocks.{k + 1}": f"up_blocks.{k}" for k in range(n_s)}
