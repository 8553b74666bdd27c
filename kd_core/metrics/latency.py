"""The denoiser's latency per sampling step, every model timed interleaved, and its FLOPs per step
(the model-size study's and block distillation's time analysis).

Models timed one after the other share nothing but the clock, and the clock drifts with the
machine's state (a shared host, frequency scaling, caches): in the efficiency table of a default
shapes run, the teacher and the width x1 student, the same architecture, measured first and last,
differed by half. Here the teacher's and every student's U-Net are loaded at once and timed in
rounds; each round runs one forward pass of every model, in a freshly shuffled order, on the same
input, so drift falls on all models alike. The input is what a sampling step feeds the U-Net: a
batch of latents (doubled for classifier-free guidance when the teacher samples with it), a
mid-schedule timestep and prompt embeddings (none for an unconditional DDPM). Per model and batch
size: the median over rounds with a bootstrap 95% CI; the median over rounds of its time over
the teacher's in the same round (paired, so a burst of load on the machine cancels) with its CI;
and the FLOPs of one forward pass
(``torch.utils.flop_counter``), the device-independent cost that the latency should follow once
the device is busy enough.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from tqdm.auto import tqdm

from kd_core.io import write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci
from kd_core.models.loading import (
    is_conditional,
    latent_scale,
    load_pipeline,
    load_unet,
    model_default_size,
)
from kd_core.models.params import count_parameters
from kd_core.seeding import resolve_device, resolve_dtype
from kd_core.train.data import sdxl_added_cond

LATENCY_SCHEMA = pa.schema([
    ("model", pa.string()), ("factor", pa.float64()), ("batch_size", pa.int64()), ("step_ms", pa.float64()),
    ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("ratio_teacher", pa.float64()),
    ("ratio_ci_low", pa.float64()), ("ratio_ci_high", pa.float64()), ("gflops", pa.float64()), ("params", pa.int64()),
    ("rounds", pa.int64()), ("device", pa.string()), ("dtype", pa.string()),
])


@dataclass(frozen=True)
class LatencyConfig:
    batch_sizes: tuple[int, ...] = (1, 8)  # images per step (guidance doubles the U-Net's batch)
    rounds: int = 30
    warmup: int = 3
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16/fp16 on GPU, fp32 on CPU
    guidance_scale: float = 1.0  # > 1 with a text-conditioned teacher: the U-Net sees the batch twice


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_inputs(pipe, batch: int, guidance_scale: float, device: torch.device, dtype: torch.dtype) -> dict:
    """One sampling step's U-Net input for ``batch`` images of the teacher's default size."""
    size = model_default_size(pipe) // latent_scale(pipe)
    n = batch * (2 if guidance_scale > 1 and is_conditional(pipe) else 1)
    gen = torch.Generator("cpu").manual_seed(0)
    inputs = {"sample": torch.randn((n, pipe.unet.config.in_channels, size, size), generator=gen).to(device, dtype),
              "timestep": torch.full((n,), pipe.scheduler.config.num_train_timesteps // 2, device=device)}
    if is_conditional(pipe):
        with torch.inference_mode():
            enc = pipe.encode_prompt(["a photo"] * n, device=device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=False)
        inputs["encoder_hidden_states"] = enc[0].to(dtype)
        if len(enc) == 4:  # SDXL: the pooled embedding and the size ids, as its pipeline passes them
            inputs["added_cond_kwargs"] = sdxl_added_cond(enc[2], model_default_size(pipe), dtype, device)
    return inputs


def _cpu_attention(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


#: torch's FlopCounterMode counts the CUDA attention kernels but not the CPU one that
#: ``scaled_dot_product_attention`` runs there (0 FLOPs: a U-Net's attention went uncounted on a CPU).
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                       torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def count_flops(fn) -> int:
    """Floating-point operations (multiply-add = 2) of the tensor work ``fn()`` runs, backward passes
    included, on any device."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())


def flops(unet: torch.nn.Module, inputs: dict) -> int:
    """Floating-point operations of one forward pass (multiply-add = 2)."""
    with torch.inference_mode():
        return count_flops(lambda: unet(**inputs))


def _step_ms(unet: torch.nn.Module, inputs: dict, device: torch.device) -> float:
    """Milliseconds of one forward pass (the device synchronised before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    unet(**inputs)
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def time_interleaved(calls: dict[str, Callable[[], float]], rounds: int, warmup: int, rng: np.random.Generator,
                     desc: str) -> dict[str, np.ndarray]:
    """Each call's milliseconds (what it returns) over ``rounds`` rounds; every round runs every call
    once, in an order freshly shuffled by ``rng``, so that drift of the machine falls on all alike.
    The first ``warmup`` rounds are run and dropped."""
    names = list(calls)
    times: dict[str, list[float]] = {m: [] for m in names}
    for r in tqdm(range(warmup + rounds), desc=desc, unit="round"):
        for i in rng.permutation(len(names)):
            ms = calls[names[i]]()
            if r >= warmup:
                times[names[i]].append(ms)
    return {m: np.asarray(t) for m, t in times.items()}


def median_and_ratio(x: np.ndarray, reference: np.ndarray, rng: np.random.Generator, n_boot: int) -> dict[str, float]:
    """The median of ``x`` and of its ratio to ``reference`` round by round (both timed within each
    round, so a burst of load cancels), each with a percentile bootstrap 95% CI."""
    lo, hi = bootstrap_ci(x, rng, n_boot, stat=np.median)
    ratio = x / reference
    r_lo, r_hi = bootstrap_ci(ratio, rng, n_boot, stat=np.median)
    return {"median": float(np.median(x)), "ci_low": lo, "ci_high": hi, "ratio": float(np.median(ratio)),
            "ratio_ci_low": r_lo, "ratio_ci_high": r_hi}


def denoiser_latency(teacher: str, students: dict[str, str], factors: dict[str, float], cfg: LatencyConfig,
                     out_path: str | Path | None = None, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Step latency (interleaved rounds) and FLOPs of the teacher's and every student's U-Net."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_pipeline(teacher, device, dtype)
    unets = {"teacher": pipe.unet.eval()} | {m: load_unet(p, device, dtype).eval() for m, p in students.items()}
    rng = np.random.default_rng(seed)
    rows = []
    for batch in cfg.batch_sizes:
        inputs = step_inputs(pipe, batch, cfg.guidance_scale, device, dtype)
        with torch.inference_mode():
            times = time_interleaved({m: partial(_step_ms, u, inputs, device) for m, u in unets.items()}, cfg.rounds, cfg.warmup, rng,
                                     f"step latency, batch {batch}")
        for m, unet in unets.items():
            s = median_and_ratio(times[m], times["teacher"], rng, n_boot)
            rows.append({"model": m, "factor": 1.0 if m == "teacher" else factors.get(m, float("nan")),
                         "batch_size": batch, "step_ms": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "ratio_teacher": s["ratio"], "ratio_ci_low": s["ratio_ci_low"], "ratio_ci_high": s["ratio_ci_high"],
                         "gflops": flops(unet, inputs) / 1e9, "params": count_parameters(unet), "rounds": len(times[m]),
                         "device": str(device), "dtype": str(dtype).removeprefix("torch.")})
    table = pd.DataFrame(rows, columns=LATENCY_SCHEMA.names)
    if out_path is not None:
        write_parquet(table, out_path, LATENCY_SCHEMA, "metrics/size_latency",
                      {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "teacher": teacher, "students": students,
                       "threads": torch.get_num_threads(), "ci": "percentile bootstrap 95% of the median over rounds"})
    return table
