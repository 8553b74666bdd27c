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


SDXL students (an SDXL-layout teacher: an outer stage without attention, two with transformers,
``layers_per_block`` 2), named after the published models they reproduce; each keeps the first
``k`` transformer blocks of every kept attention and is a plain ``UNet2DConditionModel`` through
diffusers' own keys (``transformer_layers_per_block``, ``reverse_transformer_layers_per_block``,
``mid_block_type``). Their depths are the teacher's scaled by the published ratios (SDXL's 2 and 10
deep stages; on SDXL itself each level equals the published config):

- ``ssd_1b`` (Segmind SSD-1B, 1.3 B): every resnet kept; the innermost stage's down transformers
  10 -> 4, up [4, 4, 10]; the middle stage's up [2, 1, 1]; a mid-block of one resnet, no attention;
- ``vega`` (Segmind-Vega, 0.74 B): depths 2 -> 1 and 10 -> 2, down and up; the same mid-block;
- ``koala_1b`` (KOALA-1B, arXiv 2312.04005: "up to 54%" smaller): one layer fewer per stage (as
  BK-SDM), the innermost depth 10 -> 6, the mid-block kept at depth 6;
- ``koala_700m`` (KOALA-700M, "up to 69%"): as ``koala_1b`` with depth 5 and no mid-block.

The depths come from the published configs as ComfyUI's model detection (``comfy/model_detection.py``)
and a diffusers copy of SSD-1B's config spell them; the segmind/SSD-1B and etri-vilab config files
themselves could not be read here. Weights: SSD-1B's published training code loads the SDXL state
dict into the student by name (the first blocks of each transformer, the mid-block's first resnet),
which is the map used; KOALA publishes no training code or weight map: it gets BK-SDM's map (the
first down layer, the up layers that do not read the removed skip) with the same first-k rule."""

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


def _check_level(level: str) -> None:
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
    _check_level(level)
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


def build_student(teacher: UNet2DConditionModel, level: str, copy_weights: bool = True) -> UNet2DConditionModel:
    """The ``level`` student of ``teacher`` (same dtype), initialised from the teacher's weights."""
    student = UNet2DConditionModel.from_config(student_config(teacher.config, level))
    if student.dtype != teacher.dtype:
        student.to(dtype=teacher.dtype)
    if copy_weights:
        copy_teacher_weights(teacher, student, level)
    return student


_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)$")


def _removes_layer(level: str) -> bool:
    return level in LEVELS or _SDXL_RULES[level]["remove_layer"]


def _teacher_key(key: str, level: str) -> str:
    """The teacher parameter that initialises student parameter ``key`` (a kept transformer's
    ``transformer_blocks.<j>`` is the teacher's of the same index: the first ``k`` are kept)."""
    m = _UP.match(key)
    if not m:
        return key  # conv_in, time embedding, down blocks (first layers kept), mid-block, conv_out
    block, kind, idx, rest = int(m[1]), m[2], int(m[3]), m[4]
    if level == "bk_tiny":
        block += 1  # the teacher's innermost up stage is gone
    if kind != "upsamplers" and idx >= 1 and _removes_layer(level):
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


FEATURES = ("blocks", "self_attention")


def _self_attention_map(student: UNet2DConditionModel, level: str) -> dict[str, str]:
    """Every self-attention (``attn1``) of the student's transformer blocks against the teacher's that
    initialised it (the same weight map: its first k blocks, BK-SDM's up-layer shift)."""
    names = [n for n, _ in student.named_modules() if n.endswith(".attn1") and ".transformer_blocks." in n]
    return {_teacher_key(f"{n}.weight", level).removesuffix(".weight"): n for n in names}


def feature_map(teacher: UNet2DConditionModel, student: UNet2DConditionModel, level: str,
                features: str = "blocks") -> dict[str, str]:
    """Teacher module -> student module whose outputs feature KD matches.

    ``blocks`` (BK-SDM's choice) -- base / small and the SDXL levels: every down and up stage with its
    namesake; tiny: the outer down stages by name, the student's innermost (now last) down stage
    against the teacher's same stage at its last attention output (before the teacher's
    downsampler, which the student lacks), and student up stage k against teacher up stage k + 1.
    ``self_attention`` (KOALA's finding: the self-attention features teach most): the output of every
    kept transformer block's self-attention against the teacher block it was copied from.
    """
    _check_level(level)
    if features not in FEATURES:
        raise KDError(f"block_kd.features is {features!r}; choose one of {', '.join(FEATURES)}")
    if features == "self_attention":
        return _self_attention_map(student, level)
    n_t, n_s = len(teacher.down_blocks), len(student.down_blocks)
    if level != "bk_tiny":
        pairs = {f"down_blocks.{i}": f"down_blocks.{i}" for i in range(n_t)}
        return pairs | {f"up_blocks.{i}": f"up_blocks.{i}" for i in range(n_t)}
    pairs = {f"down_blocks.{i}": f"down_blocks.{i}" for i in range(n_s - 1)}
    pairs[_last_attention_or_resnet(teacher, n_s - 1)] = _last_attention_or_resnet(student, n_s - 1)
    return pairs | {f"up_blocks.{k + 1}": f"up_blocks.{k}" for k in range(n_s)}
