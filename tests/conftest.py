from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


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
