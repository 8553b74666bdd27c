"""Width-factor students: the teacher's U-Net with every stage's channel count scaled by a factor.

The model-size study distils one teacher into students of several widths (factors 0.25 ... 1.0 by
default, down to 0.01 where the architecture allows) and asks how size changes error, sampling
behaviour and cost. A student keeps the teacher's depth, block types, attention placement,
conditioning and noise schedule; only ``block_out_channels`` shrink (the time embedding and every
inner width follow from them in diffusers). Works for ``UNet2DConditionModel`` (latent, text
conditioned) and ``UNet2DModel`` (pixel DDPM) configs.

Validity: every stage width must be a multiple of the group-norm group count (one per model) and
of the attention-head split. A width is rounded to the nearest multiple of that quantum; when a
stage would fall below one quantum, groups (then heads) are halved until it fits, so that a small
factor yields a small model instead of an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from kd_core.errors import KDError
from kd_core.models.params import count_parameters


def _heads_key(cfg: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(config key that fixes the head split, whether it counts heads (True) or head width (False))."""
    if cfg.get("_class_name") == "UNet2DModel" or "cross_attention_dim" not in cfg:
        return ("attention_head_dim", False) if cfg.get("attention_head_dim") else (None, False)
    if cfg.get("num_attention_heads"):
        return "num_attention_heads", True
    return ("attention_head_dim", True) if cfg.get("attention_head_dim") else (None, True)


def width_config(teacher: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """The diffusers config of the ``factor``-wide student of a teacher U-Net config."""
    if not 0 < factor <= 1:
        raise KDError(f"width factor {factor} is out of range; use 0 < factor <= 1")
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in teacher.items() if not k.startswith("_")}
    channels = list(cfg["block_out_channels"])
    groups = int(cfg.get("norm_num_groups") or 32)
    key, counts_heads = _heads_key(teacher)
    heads = cfg.get(key) if key else None
    per_stage = isinstance(heads, list)
    heads_list = [int(h) for h in heads] if per_stage else [int(heads)] * len(channels) if heads else [1] * len(channels)
    if not counts_heads and key:  # UNet2DModel: attention_head_dim is a head width; channels must be multiples of it
        heads_list = [int(cfg[key])] * len(channels)
    targets = [c * factor for c in channels]

    def quantum(i: int) -> int:
        return math.lcm(groups, heads_list[i])

    # halve groups, then heads, while the smallest stage would fall below one quantum
    while any(t < quantum(i) for i, t in enumerate(targets)):
        if groups > 1 and groups >= max(heads_list):
            groups //= 2
        elif max(heads_list) > 1:
            heads_list = [max(1, h // 2) for h in heads_list]
        else:
            break
    new = [max(quantum(i), quantum(i) * math.floor(t / quantum(i) + 0.5)) for i, t in enumerate(targets)]  # ties up
    cfg["block_out_channels"] = new
    cfg["norm_num_groups"] = groups
    if key:
        cfg[key] = heads_list if per_stage else heads_list[0]
    return cfg


def unet_class(model_or_config: torch.nn.Module | Mapping[str, Any]) -> type:
    config = model_or_config.config if isinstance(model_or_config, torch.nn.Module) else model_or_config
    name = config.get("_class_name") or type(model_or_config).__name__
    if name == "UNet2DModel" or "cross_attention_dim" not in config:
        return UNet2DModel
    return UNet2DConditionModel


def build_width_student(teacher: torch.nn.Module, factor: float, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised student of the teacher's class with ``width_config(teacher.config, factor)``."""
    cls = unet_class(teacher)
    cfg = width_config(dict(teacher.config), factor)
    torch.manual_seed(seed)
    return cls.from_config(cfg)


def parameters_of_config(config: Mapping[str, Any]) -> int:
    """Parameter count of a U-Net config, built on the meta device (no memory; SD-size configs in ms)."""
    with torch.device("meta"):
        model = unet_class(config).from_config({k: v for k, v in config.items() if not k.startswith("_")})
    return count_parameters(model)
