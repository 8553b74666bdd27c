"""The configs of the BK-SDM and SDXL block-removed students (what :mod:`kd_core.models.bk_sdm`
builds and copies the weights of), as plain dicts: no torch, so that a config check can derive a
student's config from a local teacher's ``unet/config.json`` before any work starts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
#: The U-Net config of stable-diffusion-xl-base-1.0 (its public unet/config.json; 2,567,463,684
#: parameters): the teacher of the published SDXL students.
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
}
SDXL_LEVELS = ("ssd_1b", "vega", "koala_1b", "koala_700m")
ALL_LEVELS = LEVELS + SDXL_LEVELS
#: Each SDXL level's depths as shares of the teacher's (SDXL: 2 in the middle stage, 10 innermost):
#: down (middle, innermost), up of the innermost stage, up of the middle stage (None: as down),
#: the mid-block ("UNetMidBlock2D": one resnet; None: none; "keep": the teacher's, at the innermost
#: down depth), and whether a layer per stage is removed (BK-SDM's map).
_SDXL_RULES: dict[str, dict[str, Any]] = {
    "ssd_1b": {"down": (1.0, 0.4), "up_inner": (0.4, 0.4, 1.0), "up_middle": (1.0, 0.5, 0.5), "mid": "UNetMidBlock2D",
               "remove_layer": False},
    "vega": {"down": (0.5, 0.2), "up_inner": None, "up_middle": None, "mid": "UNetMidBlock2D", "remove_layer": False},
    "koala_1b": {"down": (1.0, 0.6), "up_inner": None, "up_middle": None, "mid": "keep", "remove_layer": True},
    "koala_700m": {"down": (1.0, 0.5), "up_inner": None, "up_middle": None, "mid": None, "remove_layer": True},
}
#: Config entries given per stage (down order) that lose their innermost entry in bk_tiny.
PER_STAGE = ("attention_head_dim", "num_attention_heads", "transformer_layers_per_block", "only_cross_attention",
             "cross_attention_dim", "reverse_transformer_layers_per_block")


def check_level(level: str) -> None:
    """A KDError naming the levels when ``level`` is none of them."""
    if level not in ALL_LEVELS:
        raise KDError(f"unknown BK-SDM student {level!r}; choose one of {', '.join(ALL_LEVELS)}")


def _scaled(share: float, depth: int) -> int:
    return max(1, int(share * depth + 0.5))


def _sdxl_student_config(cfg: dict[str, Any], level: str) -> dict[str, Any]:
    layout = (list(cfg.get("down_block_types", [])), cfg.get("layers_per_block"), cfg.get("mid_block_type"))
    if layout != (SDXL_UNET_CONFIG["down_block_types"], 2, "UNetMidBlock2DCrossAttn"):
        raise KDError(f"the {level} student is defined for an SDXL-layout teacher U-Net (down blocks "
                      f"{', '.join(SDXL_UNET_CONFIG['down_block_types'])}, layers_per_block 2, a cross-attention "
                      f"mid-block); this teacher has {layout[0]}, layers_per_block {layout[1]!r}, mid-block {layout[2]!r}: "
                      "use bk_base / bk_small / bk_tiny for an SD 1.x-layout teacher")
    depths = cfg.get("transformer_layers_per_block", 1)
    depths = [depths] * 3 if isinstance(depths, int) else list(depths)
    if len(depths) != 3 or not all(isinstance(d, int) for d in depths) or cfg.get("reverse_transformer_layers_per_block"):
        raise KDError(f"the {level} student needs one transformer depth per stage (SDXL: [1, 2, 10]); the teacher has "
                      f"transformer_layers_per_block {cfg.get('transformer_layers_per_block')!r}"
                      + (" and a reverse_transformer_layers_per_block" if cfg.get("reverse_transformer_layers_per_block") else ""))
    rule, (middle, inner) = _SDXL_RULES[level], depths[1:]
    down = [depths[0], _scaled(rule["down"][0], middle), _scaled(rule["down"][1], inner)]
    cfg["transformer_layers_per_block"] = down
    if rule["up_inner"]:  # per up layer, innermost stage first (diffusers' order); the outer stage has none
        cfg["reverse_transformer_layers_per_block"] = [[_scaled(f, inner) for f in rule["up_inner"]],
                                                       [_scaled(f, middle) for f in rule["up_middle"]], depths[0]]
    if rule["mid"] != "keep":
        cfg["mid_block_type"] = rule["mid"]
    if rule["remove_layer"]:
        cfg["layers_per_block"] = 1
    return cfg


def student_config(teacher: Mapping[str, Any], level: str) -> dict[str, Any]:
    """The diffusers config of the ``level`` student of a teacher U-Net config."""
    check_level(level)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in teacher.items() if not k.startswith("_")}
    if level in SDXL_LEVELS:
        return _sdxl_student_config(cfg, level)
    if cfg.get("addition_embed_type") == "text_time":
        raise KDError(f"{level} is defined for SD 1.x-style U-Nets; this teacher has SDXL's micro-conditioning: "
                      f"choose one of {', '.join(SDXL_LEVELS)}")
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


def removes_layer(level: str) -> bool:
    """Whether the level drops one layer per stage (BK-SDM's map: its up layers shift by one)."""
    return level in LEVELS or _SDXL_RULES[level]["remove_layer"]
