"""Latency per image of every (model, steps) pair of the step-distillation study, timed interleaved.

Latency. Every pipeline the study samples with is loaded once (the teacher's serves all its step
counts, the student's all of its) and timed in rounds; each round makes one image with every
(model, steps) pair in a freshly shuffled order, with the same prompt and seed, so that drift of the
machine falls on all pairs alike. Per pair: the median over rounds with a bootstrap 95% CI, and the
median of its time over the full-step teacher's in the same round (paired) with its CI.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from kd_core.generate import GenerationConfig
from kd_core.io import write_parquet
from kd_core.metrics.efficiency import time_pipeline
from kd_core.metrics.latency import median_and_ratio, time_interleaved
from kd_core.models.loading import image_size, load_pipeline
from kd_core.seeding import resolve_device, resolve_dtype

LATENCY_SCHEMA = pa.schema([
    ("model", pa.string()), ("steps", pa.int64()), ("latency_ms", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("ratio_teacher", pa.float64()), ("ratio_ci_low", pa.float64()),
    ("ratio_ci_high", pa.float64()), ("rounds", pa.int64()), ("device", pa.string()), ("dtype", pa.string()),
])

PROMPT = "a photo"


def _pipeline_key(source: str, g: GenerationConfig) -> tuple:
    return (source, g.dtype, g.device, g.variant, g.vae, g.scheduler, g.lora)


def step_latency(models: dict[str, tuple[str, GenerationConfig]], reference: str, rounds: int = 10, warmup: int = 1,
                 out_path: str | Path | None = None, prompt: str = PROMPT, seed: int = 0,
                 n_boot: int = 2000) -> pd.DataFrame:
    """Latency per image of every model (name -> (source, generation config)), interleaved rounds;
    ``reference`` (the full-step teacher) is the denominator of each round's ratio."""
    if reference not in models:
        raise ValueError(f"the reference model {reference!r} is not among the timed models")
    pipes: dict[tuple, object] = {}
    runs = {}
    for name, (source, g) in models.items():
        device = resolve_device(g.device)
        dtype = resolve_dtype(g.dtype, device)
        key = _pipeline_key(source, g)
        if key not in pipes:
            pipe = load_pipeline(source, device, dtype, g.variant, g.vae, g.scheduler, g.lora)
            pipe.set_progress_bar_config(disable=True)
            if g.lora:  # timed as deployed: the adapter merged
                pipe.fuse_lora()
                pipe.unload_lora_weights()
            pipes[key] = pipe
        pipe = pipes[key]
        runs[name] = (pipe, device, dtype, g.steps, g.guidance_scale, image_size(pipe, g.resolution, "resolution"))
    def image(run) -> float:
        pipe, device, _, steps, guidance, size = run
        return time_pipeline(pipe, device, prompt, steps, guidance, size, seed=seed)[0] * 1e3

    rng = np.random.default_rng(seed)
    times = time_interleaved({m: partial(image, run) for m, run in runs.items()}, rounds, warmup, rng, "latency per image")
    rows = []
    for m, (_, device, dtype, steps, _, _) in runs.items():
        s = median_and_ratio(times[m], times[reference], rng, n_boot)
        rows.append({"model": m, "steps": steps, "latency_ms": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                     "ratio_teacher": s["ratio"], "ratio_ci_low": s["ratio_ci_low"], "ratio_ci_high": s["ratio_ci_high"],
                     "rounds": len(times[m]), "device": str(device), "dtype": str(dtype).removeprefix("torch.")})
    table = pd.DataFrame(rows, columns=LATENCY_SCHEMA.names)
    if out_path is not None:
        write_parquet(table, out_path, LATENCY_SCHEMA, "metrics/step_latency",
                      {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "reference": reference, "prompt": prompt,
                       "threads": torch.get_num_threads(), "ci": "percentile bootstrap 95% of the median over rounds"})
    return table
