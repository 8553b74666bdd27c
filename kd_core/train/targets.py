"""Target networks for losses with state: a frozen copy of the trained network that follows it by
an exponential moving average, updated after every optimizer step.

Latent consistency distillation of a whole U-Net (LCM; diffusers'
examples/consistency_distillation/train_lcm_distill_sd_wds.py, ``target_unet``) compares the
online network's consistency output at one point of the teacher's ODE path with the target
network's at the next point; the target follows the online weights as ``target = decay * target +
(1 - decay) * online`` (BYOL / mean-teacher style). The loss owns an :class:`EMATarget`; the
training loop (:class:`kd_core.train.loop.Trainer`) calls the loss's ``after_step(model, step)``
after each optimizer step, saves ``state_dict()`` with every checkpoint and restores it with
``load_state_dict`` on resume, so a resumed run ends with the weights and the target of an
uninterrupted one.
"""

from __future__ import annotations

import copy

import torch


class EMATarget:
    """A frozen copy of ``online`` (its parameters and buffers) that follows it by EMA."""

    def __init__(self, online: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay {decay} is outside [0, 1)")
        self.decay = decay
        self.net = copy.deepcopy(online).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, online: torch.nn.Module) -> None:
        """``target = decay * target + (1 - decay) * online`` for every parameter; buffers copied."""
        for t, o in zip(self.net.parameters(), online.parameters(), strict=True):
            t.lerp_(o.detach().to(t.dtype), 1 - self.decay)
        for t, o in zip(self.net.buffers(), online.buffers(), strict=True):
            t.copy_(o)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)
