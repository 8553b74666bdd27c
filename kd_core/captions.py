"""Image-caption pairs for training: where they come from, checked before anything is encoded.

Sources: a generation manifest (the teacher's images and prompts: knowledge transfer), a local
folder with a captions table (``metadata.jsonl`` as in Hugging Face ``imagefolder``, or
``captions.csv`` / ``captions.parquet``), or a Hugging Face ``datasets`` name when online. This
module does not import torch, so that the workflow checks a caption table when it reads the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kd_core.errors import KDError
from kd_core.io import save_png

FILE_COLUMNS = ("file", "file_name", "image")
CAPTION_COLUMNS = ("caption", "text", "prompt")


@dataclass(frozen=True)
class DataConfig:
    source: str  # manifest.parquet, a folder with captions, or a datasets name
    split: str | None = "train"  # manifest split to use (None: all rows)
    caption_column: str | None = None
    image_column: str | None = None
    max_items: int | None = None
    caption_template: str | None = None  # for captionless datasets, e.g. "an impressionist painting"
    filter: dict | None = None  # hub datasets: column -> value (or list of values) to keep


def load_pairs(cfg: DataConfig) -> pd.DataFrame:
    """(absolute image path, caption) pairs; one-line errors for missing files or columns."""
    src = Path(cfg.source).expanduser()
    if src.suffix == ".parquet" and src.is_file():
        df = pd.read_parquet(src)
        if cfg.split is not None and "split" in df.columns:
            df = df[df["split"] == cfg.split]
        root = src.parent
    elif src.is_dir():
        root = src
        tables = [src / n for n in ("metadata.jsonl", "captions.parquet", "captions.csv") if (src / n).is_file()]
        if not tables:
            raise KDError(f"dataset folder {src} has no metadata.jsonl, captions.parquet or captions.csv")
        t = tables[0]
        df = pd.read_json(t, lines=True) if t.suffix == ".jsonl" else pd.read_parquet(t) if t.suffix == ".parquet" else pd.read_csv(t)
    elif src.exists() or str(cfg.source).startswith(("/", ".", "~")):
        raise KDError(f"dataset {cfg.source!r} is neither a manifest .parquet nor a folder with captions")
    else:
        return _load_hub_dataset(cfg)
    if cfg.caption_template is not None:
        df = df.assign(caption=[cfg.caption_template.format(**r) for r in df.to_dict("records")])
    fcol = cfg.image_column or next((c for c in FILE_COLUMNS if c in df.columns), None)
    ccol = cfg.caption_column or next((c for c in CAPTION_COLUMNS if c in df.columns), None)
    if fcol is None or ccol is None or fcol not in df.columns or ccol not in df.columns:
        raise KDError(f"dataset {cfg.source}: needs an image column ({'/'.join(FILE_COLUMNS)}) and a caption column "
                      f"({'/'.join(CAPTION_COLUMNS)}); found {list(df.columns)}")
    out = pd.DataFrame({"image": [str(root / f) for f in df[fcol]], "prompt": df[ccol].astype(str).to_numpy()})
    missing = [p for p in out["image"] if not Path(p).is_file()]
    if missing:
        raise KDError(f"dataset {cfg.source}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    if out.empty:
        where = f" in split {cfg.split!r}" if cfg.split else " (its caption table lists none)"
        raise KDError(f"dataset {cfg.source} has no images{where}")
    return out.iloc[: cfg.max_items].reset_index(drop=True)


def _load_hub_dataset(cfg: DataConfig) -> pd.DataFrame:
    """A Hugging Face dataset (from its cache when HF_HUB_OFFLINE=1): its images written once as PNG
    files under the datasets cache, in a folder per (name, split, filter), since the n-th image of a
    split depends on the filter."""
    import hashlib
    import json

    try:
        import datasets
    except ImportError:
        raise KDError(f"dataset {cfg.source!r} looks like a Hugging Face dataset name: pip install datasets") from None
    split = cfg.split or "train"
    ds = datasets.load_dataset(cfg.source, split=split)
    for col, want in (cfg.filter or {}).items():
        keep = set(want) if isinstance(want, list) else {want}
        ds = ds.filter(lambda ex, col=col, keep=keep: ex[col] in keep)
    icol = cfg.image_column or "image"
    ccol = cfg.caption_column or next((c for c in CAPTION_COLUMNS if c in ds.column_names), None)
    if ccol is None and cfg.caption_template is None:
        raise KDError(f"dataset {cfg.source!r} has no caption column; set lora.caption_template")
    selection = hashlib.sha256(json.dumps(cfg.filter or {}, sort_keys=True, default=str).encode()).hexdigest()[:12]
    cache = Path(datasets.config.HF_DATASETS_CACHE) / "kd_core_images" / f"{cfg.source.replace('/', '__')}__{split}__{selection}"
    rows = []
    for i, item in enumerate(ds):
        if cfg.max_items is not None and i >= cfg.max_items:
            break
        path = cache / f"{i:07d}.png"
        if not path.exists():
            save_png(item[icol].convert("RGB"), path)
        caption = cfg.caption_template.format(**item) if cfg.caption_template else str(item[ccol])
        rows.append({"image": str(path), "prompt": caption})
    return pd.DataFrame(rows)
