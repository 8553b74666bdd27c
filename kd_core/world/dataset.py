"""The shapes world's "real" dataset: rendered PNGs with their prompts and attributes in Parquet,
one table and image folder per split (``train.parquet`` + ``train/``, ``test.parquet`` + ``test/``),
each made by its own job: more test images leave the train images, and the toy models trained on
them, as they are."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.io import atomic_dir, write_parquet
from kd_core.prompts import load_grammar
from kd_core.world.render import render

WORLD_SPLITS = ("train", "test")
DATA_SCHEMA = pa.schema([("image", pa.string()), ("split", pa.string()), ("prompt", pa.string())])


@dataclass(frozen=True)
class WorldDataConfig:
    grammar: str = "shapes"
    image_size: int = 32
    n_train: int = 6144
    n_test: int = 1024
    seed: int = 0


def _split_stream(cfg: WorldDataConfig, split: str) -> np.random.Generator:
    """The train split draws from the seed's own stream (its first n images do not depend on n); the
    test split from a stream of its own, so that neither count changes the other split's images."""
    return np.random.default_rng(cfg.seed if split == "train" else [cfg.seed, zlib.crc32(split.encode())])


def make_world_split(cfg: WorldDataConfig, split: str, out_table: str | Path) -> pd.DataFrame:
    """Render the ``split`` (train: ``cfg.n_train``, test: ``cfg.n_test``) jittered images of random
    prompts into ``<split>/`` beside ``out_table``, listed in ``out_table``."""
    if split not in WORLD_SPLITS:
        raise KDError(f"the shapes world has splits {WORLD_SPLITS}, not {split!r}")
    grammar = load_grammar(cfg.grammar)
    rng = _split_stream(cfg, split)
    root = Path(out_table).parent
    rows = []
    n = cfg.n_train if split == "train" else cfg.n_test
    # One temporary folder swapped in whole: a file-by-file atomic write scans the folder for a
    # killed writer's leftovers each time, quadratic in the thousands of images.
    with atomic_dir(root / split) as tmp:
        for i in tqdm(range(n), desc=f"render real {split} images", mininterval=2):
            prompt, attrs = grammar.render(int(rng.integers(grammar.size)))
            render(attrs, cfg.image_size, rng).save(tmp / f"{i:06d}.png", format="PNG")
            rows.append({"image": f"{split}/{i:06d}.png", "split": split, "prompt": prompt, **attrs})
    df = pd.DataFrame(rows, columns=[*DATA_SCHEMA.names, *grammar.attributes])
    schema = DATA_SCHEMA
    for a in grammar.attributes:
        schema = schema.append(pa.field(a, pa.string()))
    settings = {k: v for k, v in cfg.__dict__.items() if k != ("n_test" if split == "train" else "n_train")}
    write_parquet(df, out_table, schema, f"world/{split}", {"config": settings})
    return df


def make_real_dataset(cfg: WorldDataConfig, root: str | Path) -> pd.DataFrame:
    """Both splits into the folder ``root`` (``train.parquet``, ``test.parquet``, ``train/``, ``test/``)."""
    return pd.concat([make_world_split(cfg, s, Path(root) / f"{s}.parquet") for s in WORLD_SPLITS], ignore_index=True)


def world_table(world: str | Path, split: str) -> Path:
    """The table of ``split``: ``<world>/<split>.parquet`` for a world folder, else ``world`` itself."""
    world = Path(world)
    return world / f"{split}.parquet" if world.is_dir() else world


def load_images(paths, size: int | None = None) -> torch.Tensor:
    """PNG files -> float tensor (N, 3, H, W) in [-1, 1], resized to ``size`` if given."""
    arrs = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        arrs.append(np.asarray(im))
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def load_split(world: str | Path, split: str) -> tuple[pd.DataFrame, torch.Tensor]:
    """The rows and images of ``split`` from a world folder or one split's table."""
    table = world_table(world, split)
    df = pd.read_parquet(table)
    df = df[df["split"] == split].reset_index(drop=True)
    root = table.parent
    return df, load_images([root / p for p in df["image"]])
