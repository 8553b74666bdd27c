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
    if teacher.get("addition_embed_type") == "text_time":
        raise KDError(f"width {factor:g}: width students are defined for SD 1.x-style U-Nets; the teacher has "
                      "SDXL's micro-conditioning (text_time)")
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


# --- Students inherited from the teacher's channels (width pruning) ---------------------------------
#
# A width student has the teacher's parameter names; each tensor dimension is either the teacher's
# or narrower. Every narrower dimension of teacher width W keeps the same channels, the
# ``keep[W]`` of highest importance, wherever W occurs: a layer's output channels are then the
# next layer's input channels, the residual stream of a stage is one channel set across its blocks
# and its skip connections, and the decoder's concatenations (hidden, skip) keep
# ``keep[W_hidden] + (W_hidden + keep[W_skip])``. Importance of channel c of width W: the L2 norm
# of every teacher weight that reads or writes it (summed over all tensors with a W-wide dimension).
# Attention inner widths keep the head structure: the student's heads (same count, narrower: the
# text-conditioned U-Net) keep each head's most important dimensions; fewer heads of the same width
# (the pixel U-Net) keep the most important heads. At factor 1 nothing is narrower: the student is
# the teacher.


def _concat_splits(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``up_blocks.i.resnets.j`` -> (hidden channels, skip channels) of the concatenation it reads,
    as diffusers' U-Nets build their decoders (``torch.cat([hidden, skip], dim=1)``)."""
    cfg = model.config
    channels = list(cfg["block_out_channels"])
    reversed_channels = channels[::-1]
    splits = {}
    output = reversed_channels[0]
    for i, block in enumerate(model.up_blocks):
        prev_output, output = output, reversed_channels[i]
        input_channel = reversed_channels[min(i + 1, len(channels) - 1)]
        n = len(block.resnets)
        for j in range(n):
            skip = input_channel if j == n - 1 else output
            hidden = prev_output if j == 0 else output
            assert block.resnets[j].conv1.in_channels == hidden + skip
            splits[f"up_blocks.{i}.resnets.{j}"] = (hidden, skip)
    return splits


def _split_of(name: str, dim: int, size: int, splits: dict[str, tuple[int, int]],
              geglu: set[str]) -> tuple[int, int] | None:
    """The two widths a concatenated dimension of ``size`` is made of, or None for a plain one."""
    owner = name.rpartition(".")[0]
    block, _, layer = owner.rpartition(".")
    if block in splits and ((layer == "norm1" and dim == 0) or (layer in ("conv1", "conv_shortcut") and dim == 1)):
        return splits[block]
    if owner in geglu and dim == 0:  # GEGLU: one projection, then chunk(2) into value and gate
        return size // 2, size // 2
    return None


def _heads(model: torch.nn.Module) -> dict[int, tuple[int, int]]:
    """Attention inner width -> (heads, head width) of every attention layer of ``model``."""
    from diffusers.models.attention_processor import Attention

    found: dict[int, tuple[int, int]] = {}
    for module in model.modules():
        if isinstance(module, Attention):
            inner = module.to_q.out_features
            found.setdefault(inner, (module.heads, inner // module.heads))
    return found


def _select(importance: torch.Tensor, keep: int, teacher_heads: tuple[int, int] | None,
            student_heads: tuple[int, int] | None) -> torch.Tensor:
    """Indices of the ``keep`` most important channels (ascending), whole heads or per head when the
    width is an attention inner width."""
    if teacher_heads and student_heads:
        (h_t, d_t), (h_s, d_s) = teacher_heads, student_heads
        per_head = importance.view(h_t, d_t)
        if h_t == h_s:  # same heads, narrower: each head's top d_s dimensions
            top = per_head.topk(d_s, dim=1).indices.sort(dim=1).values
            return (top + torch.arange(h_t).unsqueeze(1) * d_t).flatten()
        if d_t == d_s:  # fewer heads of the same width: the h_s most important heads
            heads = per_head.sum(1).topk(h_s).indices.sort().values
            return (heads.unsqueeze(1) * d_t + torch.arange(d_t)).flatten()
    return importance.topk(keep).indices.sort().values


def inherit_channels(teacher: torch.nn.Module, student: torch.nn.Module) -> dict[int, torch.Tensor]:
    """Load into ``student`` (a :func:`width_config` student of ``teacher``) the teacher's weights of
    the channels it keeps; returns ``teacher width -> kept channel indices`` (the map, for tests and logs)."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    if t_state.keys() != s_state.keys():
        raise KDError("the width student's parameters are not the teacher's: it cannot inherit its channels")
    splits = _concat_splits(teacher)
    geglu = {f"{n}.proj" for n, m in teacher.named_modules() if type(m).__name__ == "GEGLU"}
    narrow: dict[int, int] = {}
    importance: dict[int, torch.Tensor] = {}
    for name, t in t_state.items():
        s = s_state[name]
        for d in range(t.ndim):
            if t.shape[d] == s.shape[d] or _split_of(name, d, t.shape[d], splits, geglu) is not None:
                continue
            width = t.shape[d]
            if narrow.setdefault(width, s.shape[d]) != s.shape[d]:
                raise KDError(f"teacher width {width} becomes both {narrow[width]} and {s.shape[d]} in the student "
                              f"({name}); this U-Net's channels cannot be inherited: use size_study.init: random")
            norms = t.detach().double().transpose(0, d).reshape(width, -1).pow(2).sum(1).cpu()
            importance[width] = importance.get(width, 0) + norms
    t_heads, s_heads = _heads(teacher), _heads(student)
    keep = {w: _select(importance[w], n, t_heads.get(w), s_heads.get(n)) for w, n in narrow.items()}

    def indices(width: int) -> torch.Tensor:
        return keep[width] if width in keep else torch.arange(width)

    new = {}
    for name, t in t_state.items():
        s = s_state[name]
        out = t.detach().cpu()
        for d in range(t.ndim):
            if t.shape[d] == s.shape[d]:
                continue
            split = _split_of(name, d, t.shape[d], splits, geglu)
            idx = torch.cat([indices(split[0]), split[0] + indices(split[1])]) if split else keep[t.shape[d]]
            out = out.index_select(d, idx)
        if out.shape != s.shape:
            raise KDError(f"{name}: the teacher's {tuple(t.shape)} maps to {tuple(out.shape)}, the student has "
                          f"{tuple(s.shape)}; use size_study.init: random")
        new[name] = out.to(s.dtype)
    student.load_state_dict(new)
    return keep


def build_inherited_student(teacher: torch.nn.Module, factor: float) -> torch.nn.Module:
    """The ``factor``-wide student of ``teacher`` holding the teacher's most important channels."""
    cls = unet_class(teacher)
    student = cls.from_config(width_config(dict(teacher.config), factor))
    inherit_channels(teacher, student)
    return student
