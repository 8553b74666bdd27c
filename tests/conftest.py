from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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
def smoke_repo(tmp_path_factory) -> Path:
    """A completed run of config/smoke.yaml in a repository copy, shared by the workflow tests and
    the SLURM tests (whose cluster run must equal it): one smoke run per test session."""
    from .workflow.conftest import copy_repo, run

    repo = copy_repo(tmp_path_factory.mktemp("smoke"))
    run(repo, "--configfile", "config/smoke.yaml")
    return repo


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
def tiny_sdxl_layout(tmp_path_factory) -> Path:
    """SDXL's U-Net layout in miniature (transformer depths 2 and 4): the teacher of every SDXL block-KD student."""
    from kd_core.models.tiny import build_tiny_sdxl

    out = tmp_path_factory.mktemp("models") / "tiny_sdxl_layout"
    build_tiny_sdxl(out, sdxl_layout=True)
    return out


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> Path:
    """SD 1.5's block layout in miniature: the teacher of every BK-SDM student."""
    from kd_core.models.tiny import build_tiny_sd

    out = tmp_path_factory.mktemp("models") / "tiny_sd15"
    build_tiny_sd(out, sd15_layout=True)
    return out


def random_image_manifest(folder: Path, n: int, size: int = 64, split: str = "train", prompt: str = "a small red circle number {i3}",
                          first_split: int | None = None) -> Path:
    """``n`` seeded random RGB PNGs with prompts, listed as a generation manifest (``manifest.parquet``).

    ``prompt`` may use ``{i}`` and ``{i3}`` (i mod 3); with ``first_split`` the first that many rows
    are ``split`` and the rest ``eval``.
    """
    import pandas as pd
    from PIL import Image

    rows = []
    for i in range(n):
        Image.fromarray(torch.randint(0, 255, (size, size, 3), dtype=torch.uint8,
                                      generator=torch.Generator().manual_seed(i)).numpy()).save(folder / f"{i}.png")
        rows.append({"file": f"{i}.png", "prompt": prompt.format(i=i, i3=i % 3), "prompt_id": f"p{i}", "seed": i,
                     "negative_prompt": "", "split": split if first_split is None or i < first_split else "eval"})
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet")
    return folder / "manifest.parquet"


def damage(path: Path, kind: str) -> None:
    """Damage a file as disks and interrupted copies do: ``flipped`` (one byte in the middle),
    ``corrupt`` (garbage over its first 64 bytes), ``truncated`` (half), ``empty``, ``deleted`` or
    ``appended`` (16 trailing bytes)."""
    data = path.read_bytes()
    mid = len(data) // 2
    if kind == "deleted":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[:mid])
    elif kind == "appended":
        path.write_bytes(data + b"\0" * 16)
    elif kind == "flipped":
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:])
    elif kind == "corrupt":
        path.write_bytes(b"\xff" * 64 + data[64:])
    else:
        raise ValueError(f"unknown damage {kind!r}")


def image_folder(root: Path, classes: list[str] | tuple[str, ...], n: int = 1, size: int = 8) -> Path:
    """``root/<class>/<i>.png``: ``n`` small seeded random images per class (a labelled image folder)."""
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = torch.randint(0, 255, (size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(100 * c + i))
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")
    return root


def assert_drawn(image, size: tuple[int, int] | None = None) -> None:
    """An image a sampler drew (a PIL image or a PNG path): of ``size`` if given, finite, and not one
    flat colour (a NaN latent decodes to a flat black image, with only a warning from numpy)."""
    from PIL import Image

    image = Image.open(image) if isinstance(image, (str, Path)) else image
    if size is not None:
        assert image.size == size, f"image of {image.size}, expected {size}"
    pixels = np.asarray(image, dtype=float)
    assert np.isfinite(pixels).all() and pixels.std() > 1.0, f"a flat image (std {pixels.std():.3f}): NaN or blank sampling"
