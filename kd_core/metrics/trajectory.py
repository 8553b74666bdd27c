"""Sampling-trajectory divergence of students from their teacher, and their predicted x0 per step.

Teacher and every student sample the same prompts from the same initial noise (each prompt's
noise from a CPU generator seeded by the prompt table, as in :mod:`kd_core.generate`) with the same
scheduler, steps and classifier-free guidance. After every step the table records, per model, the
mean over prompts of MSE(student latent, teacher latent) (``quantity = latent``: how far the
student's path has drifted) and of MSE between their predicted clean latents x0 (``quantity =
x0``), with percentile-bootstrap 95% CIs over prompts. The predicted x0 at ``grid_steps`` evenly
spaced steps is decoded by the teacher's VAE (a pixel DDPM's is the image) and kept (uint8, safetensors) for the denoising grid.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.io import atomic_path, write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci
from kd_core.models.loading import (
    autoencoder,
    is_conditional,
    latent_scale,
    load_pipeline,
    load_unet,
    model_default_size,
)
from kd_core.seeding import resolve_device

TRAJECTORY_SCHEMA = pa.schema([
    ("model", pa.string()), ("factor", pa.float64()), ("step", pa.int64()), ("timestep", pa.int64()),
    ("quantity", pa.string()), ("distance", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n", pa.int64()),
])


@dataclass(frozen=True)
class TrajectoryConfig:
    n_prompts: int = 8
    steps: int = 25
    guidance_scale: float = 4.0
    scheduler: str = "ddim"
    grid_steps: int = 5
    device: str = "auto"


def grid_step_indices(steps: int, grid_steps: int) -> list[int]:
    """``grid_steps`` evenly spaced step indices from the first to the last step."""
    return sorted({int(round(i)) for i in np.linspace(0, steps - 1, min(grid_steps, steps))})


@torch.no_grad()
def sample_trajectory(unet: torch.nn.Module, scheduler, cond: torch.Tensor | None, uncond: torch.Tensor | None,
                      noise: torch.Tensor, steps: int, guidance: float,
                      seeds: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Latents after every step and predicted x0 at every step, (steps, B, C, H, W) each, on the CPU
    (``cond`` None: an unconditional model, no guidance). A stochastic sampler (DDPM, Euler
    ancestral) draws its per-step noise from per-sample generators seeded by ``seeds``, so that
    every model sampled with the same seeds meets the same noise."""
    sched = copy.deepcopy(scheduler)
    step_kwargs = {}
    if "generator" in inspect.signature(sched.step).parameters:
        step_kwargs["generator"] = [torch.Generator("cpu").manual_seed(s + 1) for s in (seeds or range(len(noise)))]
    sched.set_timesteps(steps)
    device = next(unet.parameters()).device
    latents = (noise * sched.init_noise_sigma).to(device)
    cfg = guidance > 1 and cond is not None
    emb = None if cond is None else torch.cat([uncond, cond]).to(device) if cfg else cond.to(device)
    path, x0s = [], []
    for t in sched.timesteps:
        x = torch.cat([latents] * 2) if cfg else latents
        x = sched.scale_model_input(x, t)
        eps = unet(x, t, **({} if emb is None else {"encoder_hidden_states": emb})).sample
        if cfg:
            e_u, e_c = eps.chunk(2)
            eps = e_u + guidance * (e_c - e_u)
        out = sched.step(eps, t, latents, **step_kwargs)
        latents = out.prev_sample
        path.append(latents.float().cpu())
        x0s.append(out.pred_original_sample.float().cpu())
    return torch.stack(path), torch.stack(x0s), [int(t) for t in sched.timesteps]


@torch.no_grad()
def trajectories(teacher: str, students: dict[str, str], factors: dict[str, float], prompts: pd.DataFrame,
                 out_table: str | Path | None, out_images: str | Path | None, cfg: TrajectoryConfig,
                 seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Trajectory distances of every student (name -> pipeline folder) to the teacher; decoded x0 grid images."""
    if prompts.empty:
        raise KDError("trajectory analysis: the prompt table is empty")
    device = resolve_device(cfg.device)
    pipe = load_pipeline(teacher, device, torch.float32, scheduler=cfg.scheduler, seeded_steps=True)  # per-sample step noise
    rows_p = prompts.iloc[: cfg.n_prompts]
    cond = uncond = None
    if is_conditional(pipe):
        negative = list(rows_p.get("negative_prompt", pd.Series([""] * len(rows_p))).fillna(""))
        cond, uncond = pipe.encode_prompt(list(rows_p["prompt"]), device=device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=True, negative_prompt=negative)[:2]
    ae = autoencoder(pipe)
    size = model_default_size(pipe) // latent_scale(pipe)
    shape = (pipe.unet.config.in_channels, size, size)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in rows_p["seed"]])
    unets = {"teacher": pipe.unet.eval()} | {name: load_unet(path, device).eval() for name, path in students.items()}
    paths: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    timesteps: list[int] = []
    for name, unet in tqdm(unets.items(), desc="trajectories", unit="model"):
        lat, x0, timesteps = sample_trajectory(unet, pipe.scheduler, cond, uncond, noise, cfg.steps, cfg.guidance_scale,
                                               [int(s) for s in rows_p["seed"]])
        paths[name] = (lat, x0)
    rng = np.random.default_rng(seed)
    rows = []
    t_lat, t_x0 = paths["teacher"]
    for name in students:
        lat, x0 = paths[name]
        for quantity, a, b in (("latent", lat, t_lat), ("x0", x0, t_x0)):
            per = ((a - b) ** 2).mean(dim=(2, 3, 4)).numpy()  # (steps, prompts)
            for step in range(per.shape[0]):
                lo, hi = bootstrap_ci(per[step], rng, n_boot)
                rows.append({"model": name, "factor": factors.get(name, float("nan")), "step": step,
                             "timestep": timesteps[step], "quantity": quantity, "distance": float(per[step].mean()),
                             "ci_low": lo, "ci_high": hi, "n": per.shape[1]})
    table = pd.DataFrame(rows, columns=TRAJECTORY_SCHEMA.names)
    meta = {"teacher": teacher, "students": students, "prompts": list(rows_p["prompt_id"]) if "prompt_id" in rows_p else [],
            "steps": cfg.steps, "guidance_scale": cfg.guidance_scale, "scheduler": cfg.scheduler,
            "ci": "percentile bootstrap 95% over prompts"}
    if out_table is not None:
        write_parquet(table, out_table, TRAJECTORY_SCHEMA, "metrics/trajectory", meta)
    if out_images is not None:
        grid = grid_step_indices(cfg.steps, cfg.grid_steps)
        images = {}
        for name, (_, x0) in paths.items():
            z = x0[grid].flatten(0, 1)
            dec = torch.cat([ae.decode(z[i : i + 8].to(device) / ae.config.scaling_factor).sample.float().cpu()
                             for i in range(0, len(z), 8)]) if ae is not None else z  # a pixel DDPM's x0 is the image
            images[name] = ((dec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).view(len(grid), len(rows_p), *dec.shape[1:])
        with atomic_path(out_images, suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in images.items()}, str(tmp),
                      metadata={"models": ",".join(images), "steps": ",".join(map(str, grid)),
                                "timesteps": ",".join(str(timesteps[i]) for i in grid),
                                # each sample's prompt, or its seed in a study without text
                                "prompts": "\n".join(str(p) if p else f"seed {int(sd)}"
                                                     for p, sd in zip(rows_p["prompt"], rows_p["seed"], strict=True))})
    return table
