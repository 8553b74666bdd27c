"""Checks of what a config points at, shared by the whole-experiment checks (kd_core.experiment) and
the studies' own (kd_core.studies): each raises a one-line ConfigError naming the config key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core.captions import DataConfig, load_pairs
from kd_core.config import build
from kd_core.errors import ConfigError, KDError
from kd_core.image_folder import scan_image_folder
from kd_core.models.folders import hub_offline, require_cached, require_pipeline
from kd_core.models.integrity import check_model_folder
from kd_core.sources import check_source, is_built, is_local, local_path


def source(value: str, key: str) -> None:
    """A model or data source that exists (a local path) or is a hub id; a ConfigError naming ``key`` otherwise."""
    try:
        check_source(value, key)
    except KDError as exc:
        raise ConfigError(str(exc)) from None


def model_source(value: str, key: str, pipeline: bool = False) -> Path | None:
    """A model: built by the workflow (None), a local folder that is whole (and a diffusers pipeline
    when ``pipeline``), or a hub id (in the cache when downloads are off). Returns the folder whose
    files are here: the local one or the cached snapshot (None for a hub id not cached yet)."""
    source(value, key)
    if is_built(value):
        return None
    try:
        if is_local(value):
            folder = Path(local_path(value))
            if pipeline:
                require_pipeline(folder, f"config key '{key}':")
            elif not folder.is_dir():
                return None  # a file (FID Inception weights): its loader checks it
        else:
            folder = require_cached(value, f"config key '{key}'")
            if folder is None or not hub_offline():
                return folder  # online, from_pretrained fetches what a snapshot lacks
    except KDError as exc:
        raise ConfigError(str(exc)) from None
    try:
        check_model_folder(folder)
    except KDError as exc:
        raise ConfigError(f"config key '{key}': {exc}") from None
    return folder


def training_data(cfg: dict[str, Any], section: str) -> None:
    """A study's training images: the teacher's (which then must generate its train split) or a source."""
    data = cfg[section]["data"]
    if data == "teacher" and "train" not in cfg["models"]["teacher"]["splits"]:
        raise ConfigError(f"config key '{section}.data' is 'teacher' but 'models.teacher.splits' lacks 'train'; add it")
    if data == "teacher":
        return
    source(data, f"{section}.data")
    try:
        if not is_local(data):
            require_cached(data, f"config key '{section}.data'", repo_type="dataset")
            return
    except KDError as exc:
        raise ConfigError(str(exc)) from None
    try:
        load_pairs(build(DataConfig, cfg[section], source=local_path(data), split=None))
    except KDError as exc:
        raise ConfigError(f"config key '{section}.data': {exc}") from None


def image_folder(root: str, key: str, classes: list[str] | None = None) -> None:
    """A labelled image folder ``<root>/<class>/<image>``: its layout and the first image of each class
    (the job that reads it decodes every image before it trains)."""
    try:
        scan_image_folder(Path(root).expanduser(), classes, same_size=False, verify="first")
    except KDError as exc:
        raise ConfigError(f"config key '{key}': {exc}") from None
