"""Labelled images: folders (``<root>/<class>/<image>``, the CIFAR-10 / ImageNet layout), checked
before use, and the in-memory labelled set with its class-stratified validation split.

A study that trains for hours on a folder should fail in seconds when the folder is wrong, so
:func:`scan_image_folder` verifies the whole folder first: it exists, holds at least one image per
class, every file decodes, and every image has the same size (when ``same_size``). Each problem
is one :class:`~kd_core.errors.KDError` line naming the folder or file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

from kd_core.errors import KDError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class ImageFolder:
    """Files and integer labels of a labelled folder; ``classes[label]`` is the class (sub-folder) name."""

    root: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]
    size: tuple[int, int] | None  # (width, height) when every image has it


def scan_image_folder(root: str | Path, classes: list[str] | None = None, same_size: bool = True,
                      verify: str = "all") -> ImageFolder:
    """Every image under ``root/<class>/``; ``classes`` fixes the class order (default: sorted sub-folders).
    ``verify``: decode every image (``all``) or the first of each class (``first``)."""
    root = Path(root)
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise KDError(f"image folder {root} {state}; expected <folder>/<class>/<image>.png")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = list(classes) if classes is not None else found
    if not classes:
        raise KDError(f"image folder {root} has no class sub-folders; expected <folder>/<class>/<image>.png")
    missing = [c for c in classes if c not in found]
    if missing:
        raise KDError(f"image folder {root} lacks the class folder(s) {missing}; it has {found}")
    files, labels, sizes = [], [], set()
    for label, name in enumerate(classes):
        members = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise KDError(f"class folder {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for i, p in enumerate(members):
            files.append(p)
            labels.append(label)
            if verify == "first" and i:
                continue
            try:
                with Image.open(p) as im:
                    im.verify()
                with Image.open(p) as im:
                    sizes.add(im.size)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise KDError(f"unreadable image {p} ({type(exc).__name__}); remove or replace it") from None
    if same_size and len(sizes) > 1:
        raise KDError(f"image folder {root} mixes image sizes {sorted(sizes)[:4]}; resize them to one size first")
    return ImageFolder(root, files, labels, classes, next(iter(sizes)) if len(sizes) == 1 else None)


def read_uint8(files: list[Path], size: int | None = None) -> torch.Tensor:
    """Images as a uint8 tensor (N, 3, H, W), resized to ``size`` x ``size`` when given (bicubic)."""
    import torch

    arrs = []
    for p in files:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arrs.append(np.asarray(im))
    if not arrs:
        return torch.zeros(0, 3, size or 1, size or 1, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


@dataclass
class LabelledImages:
    """uint8 images (N, 3, H, W) with integer labels into ``classes``; resized per batch, not in memory."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> LabelledImages:
        return LabelledImages(self.images[idx], self.labels[idx], self.classes)


def split_validation(data: LabelledImages, fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """(train, validation): a seeded, class-stratified hold-out of ``fraction`` of every class."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    val = []
    for c in range(len(data.classes)):
        members = torch.nonzero(data.labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        k = max(1, round(fraction * len(members))) if fraction > 0 and len(members) > 1 else 0
        val.append(members[:k])
    val_idx = torch.cat(val).sort().values if val else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[val_idx] = False
    return data.subset(torch.nonzero(keep).flatten()), data.subset(val_idx)
