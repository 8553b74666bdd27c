"""Efficiency of each model: parameters, latency per denoising step and per image, images per
second and peak memory, all measured in one process so that the models' numbers compare.

Latency is the median of ``repeats`` timed pipeline calls after ``warmup`` untimed ones; the time
of one denoising step is read from the gaps between the pipeline's step-end callbacks (the U-Net
call with classifier-free guidance, plus the scheduler step), so it holds for SD 1.x and SDXL
pipelines alike. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, and on CPU the
largest resident set size sampled every 2 ms while the model runs (its rise over the process
before loading is ``memory_increase_mb``).
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from kd_core.fast_paths import apply_to_pipeline
from kd_core.generate import GenerationConfig
from kd_core.io import write_parquet
from kd_core.models.loading import image_size, is_conditional, load_pipeline
from kd_core.models.params import pipeline_parameters
from kd_core.seeding import resolve_device, resolve_dtype

EFFICIENCY_SCHEMA = pa.schema([
    ("model", pa.string()), ("metric", pa.string()), ("value", pa.float64()), ("unit", pa.string()),
    ("device", pa.string()), ("dtype", pa.string()), ("steps", pa.int64()), ("resolution", pa.int64()),
    ("batch_size", pa.int64()), ("repeats", pa.int64()),
])


@dataclass(frozen=True)
class EfficiencyConfig:
    warmup: int = 1
    repeats: int = 5
    batch_size: int = 4  # for images per second
    steps: int | None = None  # None: the model's generation steps
    prompt: str = "a photo"
    fuse_lora: bool = True  # measure a LoRA student as deployed: adapters merged into the weights


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or sampled CPU resident set size."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb, self.start_mb = device, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mb = self.peak_mb = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, _rss_mb())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pipeline(pipe, device: torch.device, prompt: str, steps: int, guidance: float, size: int,
                  batch: int = 1, seed: int = 0) -> tuple[float, list[float]]:
    """Wall time of one pipeline call and the durations of its denoising steps (seconds)."""
    marks: list[float] = []

    def on_step_end(_pipe, _i, _t, kwargs):
        _sync(device)
        marks.append(time.perf_counter())
        return kwargs

    gen = torch.Generator("cpu").manual_seed(seed)
    conditional = is_conditional(pipe)
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        if conditional:
            pipe(prompt=[prompt] * batch, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                 generator=gen, callback_on_step_end=on_step_end, output_type="pil")
        else:  # an unconditional DDPM (pixel or latent): no step callback; its step time is the loop's time over the steps
            pipe(batch_size=batch, num_inference_steps=steps, generator=gen, output_type="pil")
    _sync(device)
    total = time.perf_counter() - t0
    if not conditional:
        return total, [total / steps] * steps
    return total, [b - a for a, b in zip(marks, marks[1:], strict=False)]


def measure_model(name: str, source: str, spec: GenerationConfig, cfg: EfficiencyConfig) -> list[dict]:
    """Load one model (as its generation config says) and measure it; it is freed before returning."""
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    gc.collect()
    with PeakMemory(device) as mem:
        pipe = load_pipeline(source, device, dtype, spec.variant, spec.vae, spec.scheduler, spec.lora)
        pipe.set_progress_bar_config(disable=True)
        if spec.lora and cfg.fuse_lora:
            pipe.fuse_lora()
            pipe.unload_lora_weights()
        apply_to_pipeline(pipe, spec.fast_paths)  # timed as the images were made
        size = image_size(pipe, spec.resolution, "efficiency resolution")
        steps = cfg.steps or spec.steps
        for i in range(cfg.warmup):
            time_pipeline(pipe, device, cfg.prompt, steps, spec.guidance_scale, size, seed=i)
        per_image, per_step = [], []
        for i in tqdm(range(cfg.repeats), desc=f"efficiency {name}", unit="run"):
            total, step_times = time_pipeline(pipe, device, cfg.prompt, steps, spec.guidance_scale, size, seed=i)
            per_image.append(total)
            per_step += step_times
        batch_times = [time_pipeline(pipe, device, cfg.prompt, steps, spec.guidance_scale, size, cfg.batch_size, i)[0]
                       for i in range(max(1, cfg.repeats // 2))]
    params = pipeline_parameters(pipe)
    del pipe
    if device.type == "cuda":  # (on the CPU the next model's collection before its measurement frees it)
        gc.collect()
        torch.cuda.empty_cache()
    core = params.get("unet", params.get("transformer", 0))
    values = [
        ("params_denoiser", core, "count"), ("params_total", sum(params.values()), "count"),
        ("latency_per_step", statistics.median(per_step) * 1e3 if per_step else float("nan"), "ms"),
        ("latency_per_image", statistics.median(per_image) * 1e3, "ms"),
        ("images_per_second", cfg.batch_size / statistics.median(batch_times), "1/s"),
        ("peak_memory", mem.peak_mb, "MiB"), ("memory_increase", mem.peak_mb - mem.start_mb, "MiB"),
    ]
    return [{"model": name, "metric": m, "value": float(v), "unit": u, "device": str(device),
             "dtype": str(dtype).removeprefix("torch."), "steps": steps, "resolution": size,
             "batch_size": cfg.batch_size, "repeats": cfg.repeats} for m, v, u in values]


def efficiency_table(models: dict[str, tuple[str, GenerationConfig]], cfg: EfficiencyConfig,
                     out_path: str | Path | None = None, provenance: dict | None = None) -> pd.DataFrame:
    """Measure every model (name -> (source, generation config)), one after the other, in this process."""
    rows = []
    for name, (source, spec) in models.items():
        rows += measure_model(name, source, spec, cfg)
    out = pd.DataFrame(rows, columns=EFFICIENCY_SCHEMA.names)
    if out_path is not None:
        write_parquet(out, out_path, EFFICIENCY_SCHEMA, "metrics/efficiency",
                      {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "config": cfg.__dict__,
                       "threads": torch.get_num_threads(), **(provenance or {})})
    return out
