"""Pairwise image metrics: each student image against the reference (teacher) image of the same
prompt and seed. SSIM and PSNR from scikit-image, MSE on [0, 1] pixels. One row per pair and metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kd_core.errors import KDError
from kd_core.io import write_parquet

PAIRWISE_SCHEMA = pa.schema([
    ("model", pa.string()), ("reference", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()),
    ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
])
#: True where larger is better.
HIGHER_IS_BETTER = {"mse": False, "psnr": True, "ssim": True}


def _load(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.float64) / 255.0


def pair_metrics(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MSE, PSNR (dB) and SSIM of two RGB images in [0, 1] of the same size."""
    mse = float(np.mean((image - reference) ** 2))
    win = min(7, *image.shape[:2]) // 2 * 2 + 1 if min(image.shape[:2]) < 7 else 7
    return {"mse": mse,
            "psnr": float(peak_signal_noise_ratio(reference, image, data_range=1.0)) if mse > 0 else float("inf"),
            "ssim": float(structural_similarity(reference, image, channel_axis=2, data_range=1.0, win_size=win))}


def pairwise_metrics(manifest: str | Path, reference_manifest: str | Path, out_path: str | Path,
                     model: str, reference: str) -> pd.DataFrame:
    """Compare every image of ``manifest`` with the reference image of the same (prompt_id, seed)."""
    man, ref = pd.read_parquet(manifest), pd.read_parquet(reference_manifest)
    pairs = man.merge(ref[["prompt_id", "seed", "file"]], on=["prompt_id", "seed"], suffixes=("", "_ref"))
    if pairs.empty:
        raise KDError(f"no (prompt_id, seed) of {model!r} has a {reference!r} image to compare with")
    root, ref_root = Path(manifest).parent, Path(reference_manifest).parent
    rows = []
    for r in pairs.itertuples(index=False):
        ref_img = _load(ref_root / r.file_ref)
        img = _load(root / r.file, (ref_img.shape[1], ref_img.shape[0]))
        for metric, value in pair_metrics(img, ref_img).items():
            rows.append({"model": model, "reference": reference, "prompt_id": r.prompt_id, "seed": int(r.seed),
                         "split": r.split, "metric": metric, "value": value})
    out = pd.DataFrame(rows)
    write_parquet(out, out_path, PAIRWISE_SCHEMA, "metrics/pairwise",
                  {"protocol": "student resized (bicubic) to the reference size; pixels in [0, 1]; SSIM win 7, RGB"})
    return out
