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

import torch
from diffusers import UNet2DConditionModel

from kd_core.errors import KDError
from kd_core.models.bk_configs import (  # noqa: F401 - the students' configs, re-exported
    ALL_LEVELS,
    LEVELS,
    SD15_UNET_CONFIG,
    SDXL_LEVELS,
    SDXL_UNET_CONFIG,
    check_level,
    removes_layer,
    student_config,
)


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
    """The teacher parameter that initialises student parameter ``key`` (a kept transformer's
    ``transformer_blocks.<j>`` is the teacher's of the same index: the first ``k`` are kept)."""
    m = _UP.match(key)
    if not m:
        return key  # conv_in, time embedding, down blocks (first layers kept), mid-block, conv_out
    block, kind, idx, rest = int(m[1]), m[2], int(m[3]), m[4]
    if level == "bk_tiny":
        block += 1  # the teacher's innermost up stage is gone
    if kind != "upsamplers" and idx >= 1 and removes_layer(level):
        idx += 1  # the teacher's second up layer (the removed down layer's skip) is dropped
    return f"up_blocks.{block}.{kind}.{idx}.{rest}"


def weight_map(student: torch.nn.Module, level: str) -> dict[str, str]:
    """student parameter / buffer name -> teacher name, for every entry of the student's state dict."""
    check_level(level)
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
    check_level(level)
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
