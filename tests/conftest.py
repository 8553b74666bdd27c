from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)
# Tests never download: a hub id that is not in the local cache must fail, not fetch.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from kd_core.models.tiny import build_tiny_sd

    out = tmp_path_factory.mktemp("models") / "tiny_sd"
    build_tiny_sd(out)
    return out


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from kd_core.models.tiny import build_tiny_sdxl

    out = tmp_path_factory.mktemp("models") / "tiny_sdxl"
    build_tiny_sdxl(out)
    return out


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> Path:
    """SD 1.5's block layout in miniature: the teacher of every BK-SDM student."""
    from kd_core.models.tiny import build_tiny_sd

    out = tmp_path_factory.mktemp("models") / "tiny_sd15"
    build_tiny_sd(out, sd15_layout=True)
    return out
