"""Pairwise image metrics: each student image against its reference (the teacher image of the same
prompt and seed), the image-comparison suite of the LoRA knowledge-transfer study.

- MSE on [0, 1] pixels; PSNR and SSIM (Wang et al. 2004) from scikit-image (RGB, 7x7 window).
- Colour-histogram similarity: OpenCV ``compareHist`` of 8x8x8-bin RGB histograms, as the
  correlation and as 1 - Bhattacharyya distance.
- Perceptual-hash similarity: 1 - Hamming distance / 64 of the 64-bit DCT hashes (imagehash).
- Sharpness ratio: variance of the Laplacian of the grey image, student over reference (1: as
  sharp as the reference); ``sharpness_error`` = |log2 ratio| is its direction-free distance.
- Colour similarity: colour moments (Stricker & Orengo 1995: mean, standard deviation and
  cube-root third moment per channel) in CIELAB; with d their Euclidean distance in Lab units
  (comparable to Delta E), similarity = 1 / (1 + d / 10): 1 when equal, 1/2 at d = 10.

Pairs are spread over worker processes. One row per pair and metric.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.io import load_rgb, write_parquet
from kd_core.metrics.tables import PER_IMAGE_SCHEMA
from kd_core.shards import Shard, shard_bounds

PAIRWISE_SCHEMA = PER_IMAGE_SCHEMA  # reference: the teacher
METRICS = ("mse", "psnr", "ssim", "hist_correlation", "hist_bhattacharyya", "phash_similarity", "sharpness_ratio",
           "sharpness_error", "colour_similarity")
PROTOCOL = ("student resized (bicubic) to the reference size; pixels in [0, 1]; SSIM RGB, 7x7 window, float32; "
            "histograms 8x8x8 RGB bins; pHash 64 bit; Laplacian of the grey image; colour moments in CIELAB, "
            "similarity 1/(1+d/10)")
HIST_BINS = 8
COLOUR_SCALE = 10.0


def _histogram(img: np.ndarray) -> np.ndarray:
    h = cv2.calcHist([img], [0, 1, 2], None, [HIST_BINS] * 3, [0, 256] * 3)
    # flattened: OpenCV 5.0's compareHist(HISTCMP_CORREL) returns NaN for some 3-D histograms
    return (h / max(float(h.sum()), 1.0)).reshape(-1, 1)


def _laplacian_var(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def colour_moments(img: np.ndarray) -> np.ndarray:
    """Mean, standard deviation and cube root of the third central moment of L*, a*, b* (9 numbers)."""
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    mean, std = cv2.meanStdDev(lab.reshape(-1, 1, 3))
    centred = lab - mean.ravel().astype(np.float32)
    third = np.einsum("ij,ij,ij->j", centred, centred, centred, dtype=np.float64) / len(centred)
    return np.concatenate([mean.ravel(), std.ravel(), np.cbrt(third)])


def pair_metrics(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Every pairwise metric of two uint8 RGB images of the same size (``image`` vs ``reference``)."""
    if image.shape != reference.shape or image.dtype != np.uint8:
        raise KDError(f"pair_metrics needs two uint8 RGB images of one size, got {image.shape} {image.dtype} "
                      f"and {reference.shape} {reference.dtype}")
    x, r = image.astype(np.float32) / 255.0, reference.astype(np.float32) / 255.0
    mse = float(np.mean((x.astype(np.float64) - r) ** 2))
    win = min(7, min(image.shape[:2]) // 2 * 2 + 1) if min(image.shape[:2]) < 7 else 7
    sharp_img, sharp_ref = _laplacian_var(image), _laplacian_var(reference)
    if sharp_ref > 0:
        ratio = sharp_img / sharp_ref
    else:
        ratio = 1.0 if sharp_img == 0 else float("inf")
    hist_x, hist_r = _histogram(image), _histogram(reference)
    hamming = imagehash.phash(Image.fromarray(image)) - imagehash.phash(Image.fromarray(reference))
    d_colour = float(np.linalg.norm(colour_moments(image) - colour_moments(reference)))
    return {
        "mse": mse,
        "psnr": float(peak_signal_noise_ratio(r, x, data_range=1.0)) if mse > 0 else float("inf"),
        "ssim": float(structural_similarity(r, x, channel_axis=2, data_range=1.0, win_size=win)),
        "hist_correlation": float(cv2.compareHist(hist_x, hist_r, cv2.HISTCMP_CORREL)),
        "hist_bhattacharyya": 1.0 - float(cv2.compareHist(hist_x, hist_r, cv2.HISTCMP_BHATTACHARYYA)),
        "phash_similarity": 1.0 - hamming / 64.0,
        "sharpness_ratio": ratio,
        "sharpness_error": abs(float(np.log2(ratio))) if 0 < ratio < float("inf") else float("inf"),
        "colour_similarity": 1.0 / (1.0 + d_colour / COLOUR_SCALE),
    }


def _pair_file_metrics(paths: tuple[str, str]) -> dict[str, float]:
    ref = load_rgb(paths[1])
    return pair_metrics(load_rgb(paths[0], (ref.shape[1], ref.shape[0])), ref)


def _init_worker() -> None:
    cv2.setNumThreads(1)


@contextlib.contextmanager
def _unimportable_main_hidden():
    """Spawned workers re-run the parent's ``__main__`` file unless it has none; a Snakemake script
    or a notebook must not be re-run (and the workers need nothing from it)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is not None and getattr(main, "__spec__", None) is None:
        del main.__file__
    try:
        yield
    finally:
        if path is not None and getattr(main, "__file__", None) is None:
            main.__file__ = path


def metrics_for_files(pairs: list[tuple[str, str]], workers: int = 1, desc: str = "pairwise") -> list[dict[str, float]]:
    """Metrics of (image file, reference file) pairs, in order, on ``workers`` processes."""
    workers = max(1, min(workers, len(pairs)))
    if workers == 1:
        _init_worker()
        return [_pair_file_metrics(p) for p in tqdm(pairs, desc=desc, unit="pair")]
    chunk = max(1, len(pairs) // (workers * 8))
    # spawn, not fork: forking a process that already runs torch / OpenMP threads can deadlock
    ctx = multiprocessing.get_context("spawn")
    with _unimportable_main_hidden(), ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        return list(tqdm(pool.map(_pair_file_metrics, pairs, chunksize=chunk), total=len(pairs), desc=desc, unit="pair"))


def pairwise_metrics(manifest: str | Path, reference_manifest: str | Path, out_path: str | Path,
                     model: str, reference: str, workers: int | None = None, shard: Shard | None = None) -> pd.DataFrame:
    """Compare every image of ``manifest`` (or of ``shard``'s contiguous slice of the pairs) with the
    reference image of the same (prompt_id, seed)."""
    man, ref = pd.read_parquet(manifest), pd.read_parquet(reference_manifest)
    pairs = man.merge(ref[["prompt_id", "seed", "file"]], on=["prompt_id", "seed"], suffixes=("", "_ref"))
    if pairs.empty:
        raise KDError(f"no (prompt_id, seed) of {model!r} has a {reference!r} image to compare with")
    if shard is not None:
        lo, hi = shard_bounds(len(pairs), shard)
        pairs = pairs.iloc[lo:hi]
        if pairs.empty:
            out = pd.DataFrame(columns=PAIRWISE_SCHEMA.names)
            write_parquet(out, out_path, PAIRWISE_SCHEMA, "metrics/pairwise", {"protocol": PROTOCOL, "n_pairs": 0})
            return out
    root, ref_root = Path(manifest).parent, Path(reference_manifest).parent
    files = [(str(root / f), str(ref_root / g)) for f, g in zip(pairs["file"], pairs["file_ref"], strict=True)]
    values = metrics_for_files(files, workers or os.cpu_count() or 1, desc=f"pairwise {model}")
    rows = [{"model": model, "reference": reference, "prompt_id": r.prompt_id, "seed": int(r.seed), "split": r.split,
             "metric": metric, "value": value}
            for r, v in zip(pairs.itertuples(index=False), values, strict=True) for metric, value in v.items()]
    out = pd.DataFrame(rows)
    write_parquet(out, out_path, PAIRWISE_SCHEMA, "metrics/pairwise", {"protocol": PROTOCOL, "n_pairs": len(pairs)})
    return out

