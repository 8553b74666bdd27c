"""What a model folder is and what it accepts, read from its config files and safetensors headers.

The workflow asks these questions when it reads the config, before any job: is this local folder a
pipeline (or a text encoder, a LoRA adapter, an image folder...), is this hub id in the Hugging Face
cache when downloads are off, which image sizes suit this pipeline, which module names does its
U-Net have (LoRA targets). No torch and no weights are loaded, so a dry run stays a matter of seconds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kd_core.errors import KDError
from kd_core.image_folder import IMAGE_SUFFIXES

#: Text-to-image pipelines of diffusers check ``height % 8 == 0`` whatever their autoencoder.
TEXT_PIPELINE_MULTIPLE = 8


def hub_offline() -> bool:
    """Downloads are off (``HF_HUB_OFFLINE`` set to 1 / true / yes / on), as ``huggingface_hub`` reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_snapshot(repo_id: str, repo_type: str = "model") -> Path | None:
    """The folder of ``repo_id`` in the Hugging Face cache (its ``main`` snapshot, else its newest), or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    main = snapshots / ref.read_text().strip() if ref.is_file() else None
    if main is not None and main.is_dir():
        return main
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1] if found else None


def require_cached(repo_id: str, what: str, repo_type: str = "model") -> Path | None:
    """The cached folder of a hub id; with downloads off and nothing cached, one line naming the id
    and the command that fetches it. Online and not cached: None (the loader downloads it)."""
    snapshot = cached_snapshot(repo_id, repo_type)
    if snapshot is None and hub_offline():
        from huggingface_hub import constants

        flag = " --repo-type dataset" if repo_type == "dataset" else ""
        raise KDError(f"{what} is the hub id {repo_id!r} (no such local folder in {os.getcwd()} either), which is "
                      f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids "
                      f"downloading it; run 'hf download {repo_id}{flag}' on a machine with network (same HF_HOME), "
                      "or unset HF_HUB_OFFLINE")
    return snapshot


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def folder_kind(path: Path) -> str:
    """What a folder holds, in words: 'a StableDiffusionPipeline pipeline', 'a CLIPTextModel model', ..."""
    if not path.is_dir():
        return "a file" if path.exists() else "missing"
    if (index := _json(path / "model_index.json")) is not None:
        return f"a {index.get('_class_name', 'diffusers')} pipeline"
    if (config := _json(path / "config.json")) is not None:
        name = config.get("_class_name") or (config.get("architectures") or [None])[0] or config.get("model_type")
        return f"a {name or 'single'} model"
    if (path / "adapter_config.json").is_file() or any(path.glob("*lora*.safetensors")):
        return "a LoRA adapter"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for sub in path.iterdir() if sub.is_dir() for p in sub.iterdir()):
        return "an image folder"
    return "a folder without model files"


def require_pipeline(path: Path, what: str) -> None:
    """``path`` is a diffusers pipeline folder (``model_index.json``), or one line saying what it is instead."""
    if (path / "model_index.json").is_file():
        return
    kind = folder_kind(path)
    hint = ""
    if (path.parent / "model_index.json").is_file():
        hint = f"; it is the {path.name}/ component of the pipeline {path.parent}: give that folder"
    raise KDError(f"{what} {path} is {kind}, not a diffusers pipeline (a folder with model_index.json){hint}")


def _component(folder: Path, names: Iterable[str]) -> dict[str, Any] | None:
    for name in names:
        if (config := _json(folder / name / "config.json")) is not None:
            return config
    return None


def size_multiple(unet: Mapping[str, Any], autoencoder: Mapping[str, Any] | None, text: bool) -> int:
    """The multiple every image side must be for this pipeline, in pixels: the autoencoder's factor
    times the U-Net's down-samplings (so every U-Net level has a whole size and skip connections
    line up), and 8 for diffusers' text-to-image pipelines, which refuse other sizes."""
    factor = 2 ** (len(autoencoder["block_out_channels"]) - 1) if autoencoder else 1
    multiple = factor * 2 ** (len(unet["block_out_channels"]) - 1)
    return math.lcm(multiple, TEXT_PIPELINE_MULTIPLE) if text else multiple


def pipeline_size_multiple(path: Path) -> int | None:
    """:func:`size_multiple` of a pipeline folder, from its config files (None when they are not there)."""
    unet = _component(path, ("unet",))
    if unet is None or "block_out_channels" not in unet:
        return None
    autoencoder = _component(path, ("vae", "vqvae"))
    text = any((path / n).is_dir() for n in ("text_encoder", "text_encoder_2"))
    return size_multiple(unet, autoencoder, text)


def check_size(size: int, multiple: int, what: str) -> None:
    """One line when ``size`` is not a multiple of ``multiple``, naming the nearest sizes that are."""
    if size % multiple:
        low, high = max(multiple, size - size % multiple), size - size % multiple + multiple
        raise KDError(f"{what} is {size} px, which this model cannot take: its autoencoder and U-Net need a "
                      f"multiple of {multiple} (e.g. {low} or {high})")


def weight_names(folder: Path) -> list[str]:
    """The tensor names of every safetensors file in ``folder`` (headers only)."""
    names: list[str] = []
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            names += [k for k in json.loads(fh.read(n)) if k != "__metadata__"]
    return names


def missing_targets(module_names: Iterable[str], targets: Iterable[str]) -> list[str]:
    """LoRA targets that name no module, matched as peft matches a list: the whole name or its tail
    after a dot (``to_q`` matches ``down_blocks.0.attentions.0...attn1.to_q``)."""
    names = list(module_names)
    return [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]


def example_targets(module_names: Iterable[str], n: int = 8) -> list[str]:
    """A few distinct last parts of module names (``to_q``, ``proj_in``...): what a LoRA target list could name."""
    return sorted({m.rsplit(".", 1)[-1] for m in module_names if not m.rsplit(".", 1)[-1].isdigit()})[:n]


def weight_modules(folder: Path) -> list[str]:
    """Module names with weights in a model folder: tensor names without their last part (``.weight``)."""
    return sorted({name.rsplit(".", 1)[0] for name in weight_names(folder)})
