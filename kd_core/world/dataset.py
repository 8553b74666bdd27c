"""The shapes world's "real" dataset: rendered PNGs with their prompts and attributes in Parquet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image
from tqdm.auto import tqdm

from kd_core.io import atomic_dir, write_parquet
from kd_core.prompts import load_grammar
from kd_core.world.render import render

DATA_SCHEMA = pa.schema([("image", pa.string()), ("split", pa.string()), ("prompt", pa.string())])


@dataclass(frozen=True)
class WorldDataConfig:
    grammar: str = "shapes"
    image_size: int = 32
    n_train: int = 6144
    n_test: int = 1024
    seed: int = 0


def make_real_dataset(cfg: WorldDataConfig, out_table: str | Path) -> pd.DataFrame:
    """Render ``n_train + n_test`` jittered images of random prompts into ``images/`` beside ``out_table``."""
    grammar = load_grammar(cfg.grammar)
    rng = np.random.default_rng(cfg.seed)
    root = Path(out_table).parent
    rows = []
    n = cfg.n_train + cfg.n_test
    # One temporary folder swapped in whole: a file-by-file atomic write scans the folder for a
    # killed writer's leftovers each time, quadratic in the thousands of images.
    with atomic_dir(root / "images") as tmp:
        for i in tqdm(range(n), desc="render real images", mininterval=2):
            prompt, attrs = grammar.render(int(rng.integers(grammar.size)))
            render(attrs, cfg.image_size, rng).save(tmp / f"{i:06d}.png", format="PNG")
            rows.append({"image": f"images/{i:06d}.png", "split": "train" if i < cfg.n_train else "test",
                         "prompt": prompt, **attrs})
    df = pd.DataFrame(rows)
    schema = DATA_SCHEMA
    for a in grammar.attributes:
        schema = schema.append(pa.field(a, pa.string()))
    write_parquet(df, out_table, schema, "world/data", {"config": cfg.__dict__})
    return df


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


def load_split(table: str | Path, split: str) -> tuple[pd.DataFrame, torch.Tensor]:
    df = pd.read_parquet(table)
    df = df[df["split"] == split].reset_index(drop=True)
    root = Path(table).parent
    return df, load_images([root / p for p in df["image"]])
