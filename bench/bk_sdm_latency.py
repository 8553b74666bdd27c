"""U-Net latency of SD 1.5 and its BK-SDM students (random weights from the public config), as
ratios to the teacher measured in the same process.

    python bench/bk_sdm_latency.py                                # CPU, 32x32 latents (256 px), batch 2
    python bench/bk_sdm_latency.py --device cuda --latent 64 --dtype fp16 --repeats 20

One U-Net call with classifier-free guidance (batch 2 per image) is one denoising step. Writes
``results/bench/bk_sdm_latency.parquet``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from diffusers import UNet2DConditionModel

from kd_core.models.bk_sdm import LEVELS, SD15_UNET_CONFIG, build_student
from kd_core.models.params import count_parameters


def _time(unet, x, t, cond, device, warmup: int, repeats: int) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            unet(x, t, encoder_hidden_states=cond)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--latent", type=int, default=32, help="latent side (64 = 512 px)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/bench/bk_sdm_latency.parquet")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    teacher = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
    students = {level: build_student(teacher, level).eval() for level in LEVELS}
    x = torch.randn(args.batch, 4, args.latent, args.latent, device=device, dtype=dtype)
    t = torch.full((args.batch,), 500, device=device)
    cond = torch.randn(args.batch, 77, 768, device=device, dtype=dtype)
    rows = []
    for name, unet in {"teacher": teacher, **students}.items():
        unet.to(device, dtype)
        times = _time(unet, x, t, cond, device, args.warmup, args.repeats)
        rows.append({"model": name, "params": count_parameters(unet), "latency_ms": statistics.median(times) * 1e3,
                     "device": str(device), "dtype": args.dtype, "latent": args.latent, "batch": args.batch,
                     "repeats": args.repeats})
        unet.to("cpu")
    df = pd.DataFrame(rows)
    df["latency_vs_teacher"] = df["latency_ms"] / df["latency_ms"].iloc[0]
    df["params_vs_teacher"] = df["params"] / df["params"].iloc[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
