"""Diffusion training in one place: the forward process, the denoiser's target and the loss weighting.

Every study that trains or probes a denoiser (LoRA, block KD, width students, DDPM teachers, toy
pretraining, the timestep-error analysis) noises its clean inputs here, as k-diffusion's
``Denoiser.loss`` is the one place where its noising, target and weighting live:

- clean inputs: a draw from a cached VAE posterior, ``z0 = mean + std * eps``
  (:func:`sample_posterior`), or the pixels themselves;
- the forward process of the model's own DDPM-family noise schedule (Ho et al. 2020),
  ``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`` (diffusers' ``add_noise``), with ``eps`` and ``t``
  drawn from the caller's generator;
- the target the scheduler's ``prediction_type`` asks for: ``epsilon`` the noise, ``v_prediction``
  ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0`` (Salimans & Ho 2022), ``sample`` ``z0`` itself;
- loss weights per example: none, or Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training
  via Min-SNR Weighting Strategy"): ``min(SNR, gamma)`` on the x0 error, which is
  ``min(SNR, gamma) / SNR`` for an epsilon target, ``min(SNR, gamma) / (SNR + 1)`` for v and
  ``min(SNR, gamma)`` for x0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from kd_core.errors import KDError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class Noised:
    """A noised batch: clean inputs, noise, timesteps, the denoiser's input and its target."""

    z0: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    noisy: torch.Tensor
    target: torch.Tensor

    def __getitem__(self, rows) -> Noised:
        """The same batch restricted to ``rows`` (a slice or index tensor): one process's share."""
        return Noised(self.z0[rows], self.noise[rows], self.t[rows], self.noisy[rows], self.target[rows])


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``z0 = mean + std * eps``: one draw of a diagonal Gaussian VAE posterior (cached mean and std)."""
    return mean + std * torch.randn(mean.shape, generator=gen)


class Diffusion:
    """The training side of a noise schedule: noising, target and weighting of a denoiser's loss."""

    def __init__(self, scheduler_config, snr_gamma: float | None = None):
        """``scheduler_config``: a diffusers scheduler config (``pipe.scheduler.config``) or a dict;
        ``snr_gamma``: Min-SNR-gamma weighting of the loss, None for plain MSE."""
        self.scheduler = DDPMScheduler.from_config(scheduler_config)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise KDError(f"the noise schedule's prediction_type is {self.prediction_type!r}; "
                          f"training supports {', '.join(PREDICTION_TYPES)}")
        if snr_gamma is not None and snr_gamma <= 0:
            raise KDError(f"snr_gamma is {snr_gamma}; give a positive number, or null for plain MSE")
        self.snr_gamma = snr_gamma
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.alphas_cumprod = self.scheduler.alphas_cumprod

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to predict from ``z_t``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(z0, noise, t)
        return z0

    def x0_eps(self, output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted clean input, predicted noise) of the denoiser's ``output`` at ``sample`` = ``z_t``,
        whatever its ``prediction_type``: the inverse of :meth:`target` given ``z_t = a z0 + s eps``
        (``a = sqrt(abar_t)``, ``s = sqrt(1 - abar_t)``)."""
        abar = self.alphas_cumprod.to(sample.device)[t].float().reshape(-1, *([1] * (sample.ndim - 1)))
        a, s = abar.sqrt(), (1 - abar).sqrt()
        output, sample = output.float(), sample.float()
        if self.prediction_type == "epsilon":
            return (sample - s * output) / a, output
        if self.prediction_type == "v_prediction":  # v = a eps - s z0
            return a * sample - s * output, a * output + s * sample
        return output, (sample - a * output) / s

    def noised(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> Noised:
        """``z0`` noised to timesteps ``t`` with ``noise``, and the target."""
        return Noised(z0, noise, t, self.scheduler.add_noise(z0, noise, t), self.target(z0, noise, t))

    def draw(self, z0: torch.Tensor, gen: torch.Generator) -> Noised:
        """``z0`` noised with Gaussian noise and uniform timesteps drawn from ``gen`` (noise first)."""
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, self.num_train_timesteps, (len(z0),), generator=gen)
        return self.noised(z0, noise, t)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``abar_t / (1 - abar_t)`` of timesteps ``t``."""
        a = self.alphas_cumprod[t.cpu()]
        return a / (1 - a)

    def weights(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-example loss weights of timesteps ``t`` (None: unweighted)."""
        if self.snr_gamma is None:
            return None
        snr = self.snr(t)
        clipped = torch.clamp(snr, max=self.snr_gamma)
        if self.prediction_type == "epsilon":
            return clipped / snr
        if self.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped

    def loss(self, pred: torch.Tensor, batch: Noised) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted mean loss, per-example MSE) of ``pred`` against ``batch``'s target."""
        target = batch.target.to(pred.device)
        per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
        w = self.weights(batch.t)
        return (per if w is None else w.to(per.device) * per).mean(), per
