"""Generation throughput against batch size, as ratios to batch size 1 in the same process.

    python bench/generation_throughput.py                       # a tiny random SD 1.x pipeline
    python bench/generation_throughput.py --model results/shapes/models/toy_teacher --size 32
    python bench/generation_throughput.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --size 512 --device cuda

Writes ``results/bench/generation_throughput.parquet`` (one row per batch size and repeat).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from kd_core.models.loading import load_pipeline
from kd_core.models.tiny import build_tiny_sd
from kd_core.seeding import resolve_device, resolve_dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="hub id or local pipeline folder (default: a tiny random SD 1.x)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--images", type=int, default=16, help="images per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="results/bench/generation_throughput.parquet")
    args = ap.parse_args()

    model = args.model
    if model is None:
        model = str(Path(tempfile.mkdtemp()) / "tiny_sd")
        build_tiny_sd(model)
    device = resolve_device(args.device)
    pipe = load_pipeline(model, device, resolve_dtype("auto", device), scheduler="ddim")
    pipe.set_progress_bar_config(disable=True)
    prompt = "a small red circle at the left on a white background"
    rows = []
    for bs in args.batch_sizes:
        pipe([prompt] * bs, num_inference_steps=2, height=args.size, width=args.size)  # warm-up
        for rep in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for start in range(0, args.images, bs):
                n = min(bs, args.images - start)
                pipe([prompt] * n, num_inference_steps=args.steps, height=args.size, width=args.size,
                     generator=[torch.Generator().manual_seed(start + i) for i in range(n)])
            if device.type == "cuda":
                torch.cuda.synchronize()
            rows.append({"batch_size": bs, "repeat": rep, "seconds": time.perf_counter() - t0,
                         "images": args.images, "device": device.type, "model": model})
    df = pd.DataFrame(rows)
    df["images_per_s"] = df["images"] / df["seconds"]
    med = df.groupby("batch_size")["images_per_s"].median()
    summary = pd.DataFrame({"images_per_s": med, "speedup_vs_batch_1": med / med.loc[args.batch_sizes[0]]})
    print(summary.to_string())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out)


if __name__ == "__main__":
    main()
