"""Pairwise-metric throughput: N image pairs at S px (default 1,000 at 512 px), on 1 and on W
worker processes; the speed-up is the ratio of the two, measured in the same process.

    python bench/pairwise_metrics.py                      # 1000 pairs, 512 px, workers 1 and all cores
    python bench/pairwise_metrics.py --pairs 200 --size 256 --workers 4

The pairs are textured, colourful synthetic scenes (discs and stripes on gradients) with a
student version that is shifted, blurred and noised, written once as PNG to a temporary folder;
the timing includes PNG decoding, as in the workflow. Writes ``results/bench/pairwise_metrics.parquet``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from kd_core.metrics.pairwise import METRICS, metrics_for_files


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    c = rng.integers(0, 255, (2, 3))
    img = (c[0] * (x / size)[..., None] + c[1] * (y / size)[..., None]) / 2
    img[(y // rng.integers(4, 16)) % 2 == 0] *= 0.7
    for _ in range(6):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 16, size // 4))]
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return img.astype(np.uint8)


def make_pairs(folder: Path, n: int, size: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        ref = _scene(rng, size)
        stu = cv2.GaussianBlur(np.roll(ref, int(rng.integers(-8, 8)), axis=1), (5, 5), float(rng.uniform(0.5, 2)))
        stu = np.clip(stu + rng.normal(0, 8, stu.shape), 0, 255).astype(np.uint8)
        a, b = folder / f"{i}_ref.png", folder / f"{i}_stu.png"
        Image.fromarray(ref).save(a)
        Image.fromarray(stu).save(b)
        pairs.append((str(b), str(a)))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="results/bench/pairwise_metrics.parquet")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pairs = make_pairs(Path(tmp), args.pairs, args.size)
        print(f"wrote {args.pairs} pairs at {args.size} px in {time.perf_counter() - t0:.1f} s")
        for workers in sorted({1, args.workers}):
            t0 = time.perf_counter()
            values = metrics_for_files(pairs, workers, desc=f"{workers} worker(s)")
            wall = time.perf_counter() - t0
            assert len(values) == args.pairs and set(values[0]) == set(METRICS)
            rows.append({"workers": workers, "pairs": args.pairs, "size": args.size, "wall_s": wall,
                         "pairs_per_s": args.pairs / wall})
    df = pd.DataFrame(rows)
    df["speedup_vs_1_worker"] = df["wall_s"].iloc[0] / df["wall_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
