import pandas as pd
import pytest
import torch
from diffusers import DiffusionPipeline

from kd_core.generate import GenerationConfig
from kd_core.metrics.efficiency import (
    EFFICIENCY_SCHEMA,
    EfficiencyConfig,
    PeakMemory,
    efficiency_table,
)


def test_efficiency_of_tiny_sd_and_sdxl(tiny_sd, tiny_sdxl, tmp_path):
    gen = GenerationConfig(steps=3, device="cpu", dtype="fp32", resolution=32)
    cfg = EfficiencyConfig(warmup=1, repeats=2, batch_size=2)
    out = efficiency_table({"sd": (str(tiny_sd), gen), "sdxl": (str(tiny_sdxl), gen)}, cfg, tmp_path / "e.parquet")
    assert list(pd.read_parquet(tmp_path / "e.parquet").columns) == EFFICIENCY_SCHEMA.names
    t = out.pivot(index="metric", columns="model", values="value")
    sd = DiffusionPipeline.from_pretrained(tiny_sd)
    assert t.loc["params_denoiser", "sd"] == sum(p.numel() for p in sd.unet.parameters())
    assert t.loc["params_total", "sd"] == sum(p.numel() for m in (sd.unet, sd.vae, sd.text_encoder) for p in m.parameters())
    assert t.loc["params_total", "sdxl"] > t.loc["params_denoiser", "sdxl"]
    for model in ("sd", "sdxl"):
        step, image = t.loc["latency_per_step", model], t.loc["latency_per_image", model]
        assert 0 < step < image  # a step is a part of the whole call
        assert t.loc["images_per_second", model] > 0 and t.loc["peak_memory", model] > 0
    assert set(out["steps"]) == {3} and set(out["resolution"]) == {32} and set(out["device"]) == {"cpu"}


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64, 2**20)  # 256 MiB
        x += 1
        del x
    assert mem.peak_mb - mem.start_mb > 200


@pytest.mark.parametrize("steps", [2])
def test_step_count_override(tiny_sd, steps):
    gen = GenerationConfig(steps=5, device="cpu", dtype="fp32", resolution=32)
    out = efficiency_table({"sd": (str(tiny_sd), gen)}, EfficiencyConfig(warmup=0, repeats=1, batch_size=1, steps=steps))
    assert set(out["steps"]) == {steps}
