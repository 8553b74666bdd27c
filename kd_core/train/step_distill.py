"""Step distillation by latent consistency distillation (LCD; Luo et al. 2023, "Latent Consistency
Models"; LCM-LoRA, Luo et al. 2023): a few-step student of a teacher pipeline's U-Net.

A consistency model ``f(x_t, t)`` maps every point of the teacher's probability-flow ODE path to the
path's clean end, parametrised with the boundary condition ``f(x, t) = c_skip(t) x + c_out(t) x0(x, t)``
(``c_skip = sd^2 / ((s t)^2 + sd^2)``, ``c_out = s t / sqrt((s t)^2 + sd^2)``; sigma_data ``sd`` 0.5,
timestep scaling ``s`` 10, as diffusers' ``LCMScheduler``), so that ``f(x, 0) ~ x``. One step:

1. a training latent ``z0`` (a cached VAE posterior of the training images) is noised to
   ``t_{n+k}``, a point of the skipping-step grid (``solver_steps`` DDIM steps over the schedule,
   ``k = num_train_timesteps // solver_steps``);
2. the teacher's classifier-free-guided estimate at ``x_{t_{n+k}}``, with the guidance scale drawn
   per example from ``[guidance_min, guidance_max]`` (the pipeline's scale ``g``; LCM's ``w = g - 1``),
   takes one DDIM step to ``x_{t_n}``;
3. the loss is the Huber (``sqrt(d^2 + c^2) - c``, ``c`` = 0.001) or squared distance between the
   student's ``f(x_{t_{n+k}}, t_{n+k})`` and the target network's ``f(x_{t_n}, t_n)`` (no gradient).

``method: lcm_lora``: LoRA on the teacher's own U-Net; the teacher is that U-Net with the adapters
switched off, the target the online student itself (diffusers'
examples/consistency_distillation/train_lcm_distill_lora_*). The adapter is a diffusers LoRA folder
that ``load_lora_weights`` reads; it samples with ``LCMScheduler``. ``method: lcm``: the whole U-Net,
a copy of the teacher's with a guidance embedding (``time_cond_proj_dim``: the student is told the
guidance scale it distils, and samples without classifier-free guidance), and an EMA target network
(:class:`kd_core.train.targets.EMATarget`) that the Trainer checkpoints and restores with the run.
The student is a pipeline folder whose scheduler is ``LCMScheduler``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import LCMScheduler, UNet2DConditionModel

from kd_core.captions import DataConfig, load_pairs
from kd_core.errors import KDError
from kd_core.models.loading import image_size, load_pipeline
from kd_core.seeding import resolve_device
from kd_core.sources import fingerprint
from kd_core.train.data import encode_pairs, encode_text_batch, sdxl_added_cond
from kd_core.train.diffusion import Diffusion, sample_posterior
from kd_core.train.distill import save_student_pipeline
from kd_core.train.loop import (
    VAL_SEED,
    Batch,
    TrainConfig,
    Trainer,
    TrainResult,
    chunked_mean,
    holdout_split,
    run_key,
    run_precision,
    weight_dtype,
)
from kd_core.train.lora import LoRAConfig, add_lora, require_module_targets, save_lora
from kd_core.train.targets import EMATarget

METHODS = ("lcm_lora", "lcm")
# the layers diffusers' LCM-LoRA scripts adapt: attention, transformer projections and feed-forward,
# the resnets' convolutions and time projections, down- and up-samplers
LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                    "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


@dataclass(frozen=True)
class StepDistillConfig:
    method: str = "lcm_lora"  # lcm_lora | lcm
    solver_steps: int = 50  # DDIM steps of the skipping-step solver over the schedule (k = T // this)
    guidance_min: float = 4.0  # the teacher's guidance scale, drawn per example from [min, max]
    guidance_max: float = 16.0  # (pipeline scale g; LCM's w = g - 1: the scripts' w in [3, 15])
    loss: str = "huber"  # huber | l2
    huber_c: float = 0.001
    sigma_data: float = 0.5  # boundary condition, as LCMScheduler's
    timestep_scaling: float = 10.0
    rank: int = 64  # lcm_lora
    alpha: float | None = None  # lcm_lora; None: alpha = rank (scale 1; the scripts leave peft's alpha 8)
    unet_targets: tuple[str, ...] = LCM_LORA_TARGETS  # lcm_lora
    ema_decay: float = 0.95  # lcm: the target network's EMA
    guidance_embedding_dim: int = 256  # lcm: the U-Net's time_cond_proj_dim
    resolution: int | None = None  # training size in px; None: the teacher's native size
    val_fraction: float = 0.1
    kohya: bool = False  # lcm_lora: also a kohya-format file for A1111 / ComfyUI


def check_config(cfg: StepDistillConfig) -> None:
    if cfg.method not in METHODS:
        raise KDError(f"step_distill.method is {cfg.method!r}; choose {' or '.join(METHODS)}")
    if cfg.loss not in ("huber", "l2"):
        raise KDError(f"step_distill.loss is {cfg.loss!r}; choose huber or l2")
    if not 1 <= cfg.guidance_min <= cfg.guidance_max:
        raise KDError(f"step_distill.guidance_min / guidance_max are {cfg.guidance_min} / {cfg.guidance_max}; "
                      "give 1 <= guidance_min <= guidance_max (1: no guidance)")


def boundary_scalings(t: torch.Tensor, sigma_data: float = 0.5, scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of the consistency boundary condition at timesteps ``t`` (LCMScheduler's)."""
    st = scaling * t.float()
    return sigma_data**2 / (st**2 + sigma_data**2), st / (st**2 + sigma_data**2) ** 0.5


class SkippingDDIM:
    """The skipping-step DDIM solver of LCD: ``n`` evenly spaced timesteps ``t_i = (i + 1) k - 1`` of a
    ``T``-step schedule (``k = T // n``); one DDIM step goes from ``t_i`` to ``t_i - k`` (0 at the end)."""

    def __init__(self, alphas_cumprod: torch.Tensor, num_train_timesteps: int, n: int):
        if not 1 <= n <= num_train_timesteps:
            raise KDError(f"step_distill.solver_steps is {n}; give 1 to the schedule's {num_train_timesteps} steps")
        self.k = num_train_timesteps // n
        self.timesteps = torch.arange(1, n + 1) * self.k - 1
        abar = alphas_cumprod.float()
        self.abar_prev = torch.cat([abar[:1], abar[self.timesteps[:-1]]])

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grid index, start timestep t_{n+k}, end timestep t_n) of ``n`` examples."""
        index = torch.randint(0, len(self.timesteps), (n,), generator=gen)
        start = self.timesteps[index]
        return index, start, (start - self.k).clamp(min=0)

    def step(self, x0: torch.Tensor, eps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step from grid point ``index`` given the estimates of x0 and noise."""
        a = self.abar_prev.to(x0.device)[index].reshape(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * eps


@dataclass(frozen=True)
class Draw:
    """The random part of one consistency step: clean latents, noise, grid points, guidance."""

    z0: torch.Tensor
    noise: torch.Tensor
    index: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    w: torch.Tensor  # LCM's guidance weight (pipeline scale - 1)

    def __getitem__(self, rows) -> Draw:
        return Draw(*(getattr(self, f)[rows] for f in ("z0", "noise", "index", "start", "end", "w")))


class Conditioning:
    """The U-Net's text conditioning of training examples (cached embeddings) and of the empty prompt
    (the unconditional half of classifier-free guidance, as the pipeline's own); SDXL: pooled
    embeddings and size ids too."""

    def __init__(self, cache: dict[str, torch.Tensor], empty: dict[str, torch.Tensor], size: int, device: torch.device):
        self.cache, self.empty, self.size, self.device = cache, empty, size, device
        self.xl = "pooled_embeds" in cache

    def _kwargs(self, emb: torch.Tensor, pooled: torch.Tensor | None, dtype: torch.dtype) -> dict:
        kw: dict = {"encoder_hidden_states": emb.to(self.device, dtype)}
        if self.xl:
            kw["added_cond_kwargs"] = sdxl_added_cond(pooled, self.size, dtype, self.device)
        return kw

    def of(self, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> dict:
        pi = self.cache["prompt_index"][ids]
        pooled = self.cache["pooled_embeds"][pi] if self.xl else None
        return self._kwargs(self.cache["prompt_embeds"][pi], pooled, dtype)

    def unconditional(self, n: int, dtype: torch.dtype = torch.float32) -> dict:
        emb = self.empty["prompt_embeds"].expand(n, -1, -1)
        pooled = self.empty["pooled_embeds"].expand(n, -1) if self.xl else None
        return self._kwargs(emb, pooled, dtype)


class ConsistencyLoss:
    """The LCD loss as an object given the prepared student (DDP-wrapped with several processes):
    the teacher, the target network, the solver, the noise schedule and the cached latents live
    here. ``teacher(x, t, cond)``: the teacher's raw output, without gradient. With an EMA target
    (``method: lcm``) the loss has state: the Trainer calls :meth:`after_step` after every optimizer
    step and keeps :meth:`state_dict` with its checkpoints."""

    def __init__(self, teacher, diffusion: Diffusion, solver: SkippingDDIM, cache: dict[str, torch.Tensor],
                 cond: Conditioning, cfg: StepDistillConfig, device: torch.device, split: tuple[torch.Tensor, torch.Tensor],
                 val_seed: int, target: EMATarget | None = None, guidance_embedding=None):
        self.teacher, self.diffusion, self.solver, self.cache, self.cond = teacher, diffusion, solver, cache, cond
        self.cfg, self.device, self.target, self.guidance_embedding = cfg, device, target, guidance_embedding
        self.val_ids, self.train_ids = split
        self.val_seed = val_seed
        if target is not None:  # only a loss with a target network has state for the checkpoints
            self.after_step = self._after_step
            self.state_dict = target.state_dict
            self.load_state_dict = target.load_state_dict

    def _after_step(self, model: torch.nn.Module, step: int) -> None:
        self.target.update(model)

    def draw(self, ids: torch.Tensor, gen: torch.Generator) -> Draw:
        """Latents of images ``ids`` from their cached posteriors, noise, grid points and guidance weights."""
        z0 = sample_posterior(self.cache["latent_mean"][ids], self.cache["latent_std"][ids], gen)
        noise = torch.randn(z0.shape, generator=gen)
        index, start, end = self.solver.draw(len(ids), gen)
        g = self.cfg.guidance_min + (self.cfg.guidance_max - self.cfg.guidance_min) * torch.rand(len(ids), generator=gen)
        return Draw(z0, noise, index, start, end, g - 1)

    def consistency(self, net, x: torch.Tensor, t: torch.Tensor, cond: dict, w_cond) -> torch.Tensor:
        """``f(x, t) = c_skip(t) x + c_out(t) x0(x, t)`` of the network ``net``."""
        out = net(x.to(self.dtype_of(net)), t, timestep_cond=w_cond, **cond).sample
        x0, _ = self.diffusion.x0_eps(out, t, x)
        c_skip, c_out = (c.reshape(-1, *([1] * (x.ndim - 1))) for c in
                         boundary_scalings(t, self.cfg.sigma_data, self.cfg.timestep_scaling))
        return c_skip * x.float() + c_out * x0

    @staticmethod
    def dtype_of(net) -> torch.dtype:
        return next(net.parameters()).dtype

    def terms(self, model: torch.nn.Module, ids: torch.Tensor, d: Draw) -> dict[str, torch.Tensor]:
        dev = self.device
        start, end, w = d.start.to(dev), d.end.to(dev), d.w.to(dev)
        x = self.diffusion.scheduler.add_noise(d.z0, d.noise, d.start).to(dev)
        cond = self.cond.of(ids)
        w_cond = self.guidance_embedding(w).to(dev) if self.guidance_embedding is not None else None
        pred = self.consistency(model, x, start, cond, w_cond)
        with torch.no_grad():
            c_out, u_out = self.teacher(x, start, cond), self.teacher(x, start, self.cond.unconditional(len(ids)))
            x0_c, eps_c = self.diffusion.x0_eps(c_out, start, x)
            x0_u, eps_u = self.diffusion.x0_eps(u_out, start, x)
            wb = w.float().reshape(-1, *([1] * (x.ndim - 1)))
            x_prev = self.solver.step(x0_c + wb * (x0_c - x0_u), eps_c + wb * (eps_c - eps_u), d.index.to(dev))
            # the online student itself (LCM-LoRA), outside DDP: a forward without gradient needs no sync
            target_net = self.target.net if self.target is not None else getattr(model, "module", model)
            target = self.consistency(target_net, x_prev, end, cond, w_cond)
        diff = pred - target
        l2 = diff.pow(2).mean()
        loss = (torch.sqrt(diff.pow(2) + self.cfg.huber_c**2) - self.cfg.huber_c).mean() if self.cfg.loss == "huber" else l2
        return {"loss": loss, "consistency_l2": l2.detach()}

    def __call__(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        ids = self.train_ids[batch.indices]
        return self.terms(model, batch.shard(ids), batch.shard(self.draw(ids, gen)))

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": chunked_mean(lambda ids, gen: self.terms(model, ids, self.draw(ids, gen)), self.val_ids,
                                         self.val_seed)["loss"]}


def _lora_teacher(unet: UNet2DConditionModel):
    """The teacher of LCM-LoRA: the student's own U-Net with its adapters switched off."""

    def teacher(x, t, cond):
        unet.disable_adapters()
        try:
            return unet(x.to(unet.dtype), t, **cond).sample
        finally:
            unet.enable_adapters()

    return teacher


def _frozen_teacher(unet: UNet2DConditionModel):
    def teacher(x, t, cond):
        return unet(x.to(unet.dtype), t, **cond).sample

    return teacher


def guided_student(teacher_unet: UNet2DConditionModel, dim: int) -> UNet2DConditionModel:
    """The full LCM student: the teacher's U-Net with a guidance embedding of ``dim`` (``time_cond_proj_dim``),
    every other weight copied; the new embedding layer starts at diffusers' initialisation."""
    config = dict(teacher_unet.config) | {"time_cond_proj_dim": dim}
    student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("time_embedding.cond_proj") for k in missing):
        raise KDError(f"the LCM student's U-Net does not take the teacher's weights (missing {missing[:3]}, "
                      f"unexpected {unexpected[:3]})")
    return student


def train_step_distill(teacher: str, data: DataConfig, out_dir: str | Path, run_dir: str | Path,
                       cfg: StepDistillConfig, train: TrainConfig) -> TrainResult:
    """Distil ``teacher`` (hub id or folder) into a few-step student on ``data``'s images and prompts.

    ``out_dir``: the LoRA adapter (``lcm_lora``) or the student pipeline folder (``lcm``); ``run_dir``
    keeps the encoded-data cache, resumable checkpoints and ``loss.parquet``."""
    check_config(cfg)
    run_dir = Path(run_dir)
    device = resolve_device(train.device)
    pipe = load_pipeline(teacher, device, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if getattr(pipe, "text_encoder", None) is None:
        raise KDError("step distillation distils a text-to-image teacher's guided estimate; the teacher has no text encoder")
    size = image_size(pipe, cfg.resolution, "step_distill.resolution")
    pairs = load_pairs(data)
    cache = encode_pairs(pipe, pairs, size, run_dir / "cache.safetensors")
    with torch.no_grad():
        empty = encode_text_batch(pipe, [""])
    cond = Conditioning(cache, empty, size, device)
    diffusion = Diffusion(pipe.scheduler.config)
    solver = SkippingDDIM(diffusion.alphas_cumprod, diffusion.num_train_timesteps, cfg.solver_steps)
    split = holdout_split(len(pairs), cfg.val_fraction, train.seed)
    weights = weight_dtype(run_precision(train))
    for name in ("vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).requires_grad_(False)
    t_unet = pipe.unet.eval().requires_grad_(False)
    torch.manual_seed(train.seed)  # LoRA's random initialisation of A, or the guidance embedding's
    if cfg.method == "lcm_lora":
        require_module_targets(t_unet, cfg.unet_targets, "step_distill.unet_targets", "unet")
        lora = LoRAConfig(rank=cfg.rank, alpha=cfg.alpha or cfg.rank, dropout=0.0, unet_targets=tuple(cfg.unet_targets))
        student = add_lora(pipe, lora, weights)["unet"]  # the frozen weights in the training precision, adapters fp32
        teacher_fn, target, w_embed = _lora_teacher(student), None, None
    else:
        student = guided_student(t_unet, cfg.guidance_embedding_dim).to(device).train()
        if weights != torch.float32:
            t_unet.to(weights)
        teacher_fn, target = _frozen_teacher(t_unet), EMATarget(student, cfg.ema_decay)

        def w_embed(w):
            return pipe.get_guidance_scale_embedding(w.float().cpu(), embedding_dim=cfg.guidance_embedding_dim)

    loss = ConsistencyLoss(teacher_fn, diffusion, solver, cache, cond, cfg, device, split, train.seed + VAL_SEED,
                           target=target, guidance_embedding=w_embed)
    key = run_key(teacher=teacher, data=asdict(data), step_distill=asdict(cfg), size=size, files=list(pairs["image"]),
                  weights=fingerprint(teacher), data_key=bytes(cache["key"].tolist()).decode())
    trainer = Trainer(student, loss, len(loss.train_ids), run_dir, train,
                      val_fn=loss.validate if len(loss.val_ids) else None, name=cfg.method, run_key=key)
    result = trainer.fit()
    meta = {"teacher": teacher, "step_distill": asdict(cfg), "train": asdict(train), "data": asdict(data),
            "resolution": size, "steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early}
    if trainer.accelerator.is_main_process:  # one writer: every rank ends with the same weights
        if cfg.method == "lcm_lora":
            save_lora(pipe, {"unet": trainer.unwrapped}, out_dir, cfg.kohya, meta)
        else:
            scheduler, pipe.scheduler = pipe.scheduler, LCMScheduler.from_config(pipe.scheduler.config)
            try:
                save_student_pipeline(pipe, trainer.unwrapped.eval().float(), out_dir, "step_distill.json", meta)
            finally:
                pipe.scheduler = scheduler
    return result
