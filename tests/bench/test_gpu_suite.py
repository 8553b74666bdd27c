"""bench/gpu_suite.py on the CPU with the tiny pipelines: every section's code path (the fast-path
variants, kd_core.generate against a plain diffusers loop, the three training steps) runs and
writes its table. The figures are a CPU's; only their shape is checked here."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_reference_pipelines_have_the_public_models_sizes():
    """The real-size pipelines, built on the meta device (no memory, no weights): their parameter counts."""
    import torch

    from kd_core.models.params import pipeline_parameters
    from kd_core.models.reference import reference_pipeline

    counts = {m: pipeline_parameters(reference_pipeline(m, torch.device("meta"), torch.float16))
              for m in ("sd15", "bk_small", "bk_tiny", "sdxl")}
    # stable-diffusion-v1-5: U-Net 859.52M, CLIP ViT-L/14 text 123.06M, VAE 83.65M; SDXL base: U-Net 2567.46M,
    # OpenCLIP bigG text 694.66M; BK-SDM's small / tiny students 482.35M / 323.38M (the paper: 0.49B / 0.33B)
    assert round(counts["sd15"]["unet"] / 1e6, 2) == 859.52
    assert round(counts["sd15"]["text_encoder"] / 1e6, 2) == 123.06 and round(counts["sd15"]["vae"] / 1e6, 2) == 83.65
    assert round(counts["sdxl"]["unet"] / 1e6, 2) == 2567.46
    assert round(counts["sdxl"]["text_encoder_2"] / 1e6, 2) == 694.66
    assert round(counts["bk_small"]["unet"] / 1e6, 2) == 482.35 and round(counts["bk_tiny"]["unet"] / 1e6, 2) == 323.38


@pytest.mark.slow
def test_suite_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_suite.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--device", "cpu", "--tiny",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile of the U-Net failed" not in proc.stderr  # the compiled variant really ran compiled
    df = pd.read_parquet(out)
    sampling = df[df.section == "sampling"]
    assert set(sampling.model) == {"sd15", "bk_base", "bk_small", "bk_tiny", "sdxl"}
    assert set(sampling[sampling.model == "sd15"].variant) == {"diffusers", "channels_last", "compile"}
    assert set(sampling[sampling.model == "sdxl"].variant) == {"diffusers", "channels_last"}
    assert set(sampling.batch_size) == {1, 2}
    e2e = df[df.section == "end_to_end"]
    assert set(zip(e2e.model, e2e.variant, strict=True)) == {(m, v) for m in ("sd15", "sdxl") for v in ("diffusers", "kd_core")}
    train = df[df.section == "training"]
    assert set(zip(train.task, train.batch_size, strict=True)) == {("lora", 2), ("lora", 4), ("bk_kd", 2), ("width_student", 2)}
    assert set(train.unit) == {"steps/s", "images/s"}
    steps = train[train.unit == "steps/s"].set_index(["task", "batch_size", "variant"])
    images = train[train.unit == "images/s"].set_index(["task", "batch_size", "variant"])
    assert ((images.value / steps.value).round(9) == images.index.get_level_values("batch_size")).all()
    for r in df.itertuples():
        assert r.value > 0 and r.ci_low <= r.value <= r.ci_high, r
        assert r.ratio_ci_low <= r.ratio_diffusers <= r.ratio_ci_high, r
        if r.variant == "diffusers":
            assert r.ratio_diffusers == 1.0, r
        assert math.isnan(r.mfu), r  # no peak FLOP/s for a CPU
    timed = df[df.section != "end_to_end"]
    assert (timed.gflop_per_step > 0).all() and (timed.peak_memory_mb > 0).all()
    # FLOPs of a step grow with its batch (twice the images: nearly twice the work)
    assert steps.loc[("lora", 4, "kd_core")].gflop_per_step > 1.8 * steps.loc[("lora", 2, "kd_core")].gflop_per_step
    assert sampling.set_index(["model", "batch_size", "variant"]).loc[("sd15", 2, "diffusers")].gflop_per_step > \
        1.8 * sampling.set_index(["model", "batch_size", "variant"]).loc[("sd15", 1, "diffusers")].gflop_per_step
    assert (df.device == "cpu").all() and (df.dtype == "float32").all()
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == len(df) + 2 and table[0].startswith("| section | model | task | variant")
