"""Labelled image sets of the DM-KD study: the shapes world's real data, a generation manifest of
class prompts (synthetic images, see :mod:`kd_core.class_prompts`) or an image folder (CIFAR-10, CIFAKE)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from kd_core.errors import KDError
from kd_core.image_folder import LabelledImages, read_uint8, scan_image_folder


def _labelled(files: list[Path], names: list[str], classes: list[str], size: int | None, what: str) -> LabelledImages:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise KDError(f"{what} has classes {unknown[:5]} that are not among the study's classes {classes}")
    return LabelledImages(read_uint8(files, size), torch.tensor([index[n] for n in names], dtype=torch.long), classes)


def world_images(table: str | Path, split: str, labels: list[str], classes: list[str], size: int | None = None
                 ) -> LabelledImages:
    """The shapes world's rendered ("real") images of ``split`` (train / test), labelled by ``labels``;
    ``table``: the world folder (a table per split) or one table."""
    table = Path(table) / f"{split}.parquet" if Path(table).is_dir() else Path(table)
    df = pd.read_parquet(table)
    df = df[df["split"] == split]
    if df.empty:
        raise KDError(f"{table} has no {split!r} images")
    names = [" ".join(r) for r in df[list(labels)].itertuples(index=False)]
    return _labelled([Path(table).parent / p for p in df["image"]], names, classes, size, f"{table} ({split})")


def manifest_images(manifest: str | Path, classes: list[str], limit_per_class: int | None = None,
                    size: int | None = None) -> LabelledImages:
    """Generated images of a manifest whose rows carry a ``label`` (the class of their prompt)."""
    df = pd.read_parquet(manifest)
    if "label" not in df.columns:
        raise KDError(f"{manifest} has no 'label' column; generate it from class prompts (rule dmkd_prompts)")
    if limit_per_class is not None:
        df = df.groupby("label", sort=False).head(limit_per_class)
    return _labelled([Path(manifest).parent / f for f in df["file"]], list(df["label"]), classes, size, str(manifest))


def folder_images(root: str | Path, classes: list[str] | None = None, size: int | None = None,
                  limit_per_class: int | None = None) -> LabelledImages:
    """A checked ``<root>/<class>/<image>`` folder; ``size`` resizes images that differ (then sizes may mix)."""
    folder = scan_image_folder(root, classes, same_size=size is None)
    files, labels = folder.files, folder.labels
    if limit_per_class is not None:
        keep = pd.Series(labels).groupby(labels).head(limit_per_class).index
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    return LabelledImages(read_uint8(files, size), torch.tensor(labels, dtype=torch.long), folder.classes)
