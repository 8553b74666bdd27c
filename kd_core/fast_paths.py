"""Speed switches for sampling and training, each off unless a config turns it on.

Every switch defaults to what plain diffusers does (``from_pretrained`` and a ``pipe(...)`` loop,
or the diffusers example training scripts): a switch becomes a default only once
``bench/gpu_suite.py`` has measured it faster on a GPU, and the README's performance section says
which have been measured where. The switches:

- ``channels_last``: the U-Net's (and the VAE's) weights in NHWC layout, which cuDNN's convolution
  kernels prefer on tensor-core GPUs;
- ``compile``: ``torch.compile`` of the U-Net (``compile_mode`` ``default``, or ``reduce-overhead``
  for CUDA graphs); in training, of the trained model's forward (the backward is compiled with it).
  A compiler failure, at any call, is one warning and the module runs eagerly from then on
  (:func:`compile_guarded`);
- ``tf32``: TF32 tensor cores for fp32 matrix products on CUDA (PyTorch already uses TF32 for
  convolutions by default; matmuls stay in full fp32 unless asked);
- ``gradient_checkpointing`` (training): recompute the trained model's activations in the backward
  pass (diffusers' and transformers' ``enable_gradient_checkpointing``), less memory for more compute;
- ``fused_optimizer`` (training): AdamW in one fused kernel. ``None`` picks by device: fused on the
  CPU (measured: the per-parameter loop was ~10% of a toy step on 2 cores), PyTorch's default
  (``foreach``) on CUDA, which the diffusers scripts use.

Precision (``dtype`` / ``mixed_precision``) is a separate, existing setting of generation and
training; the teacher's forward in U-Net distillation already runs without autograd.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class FastPaths:
    """Sampling switches (``generation.fast_paths``)."""

    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune
    tf32: bool = False


@dataclass(frozen=True)
class TrainFastPaths:
    """Training switches (``fast_paths`` of every training section)."""

    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    tf32: bool = False
    gradient_checkpointing: bool = False
    fused_optimizer: bool | None = None  # None: fused on the CPU, PyTorch's default on CUDA


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matrix products on CUDA (process-wide); off is PyTorch's default."""
    torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else "ieee"


def compile_guarded(module: torch.nn.Module, name: str, mode: str = "default", backend: str | object = "inductor") -> None:
    """Compile ``module`` in place (``nn.Module.compile``: its attributes, config and state dict stay
    as they are). Should compiling fail, at the first call or at a later recompilation (a new shape),
    the failure is one warning line and ``module`` runs eagerly from then on; an error of the model
    itself then surfaces from the eager call, as it would uncompiled."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    module.compile(mode=None if mode == "default" else mode, backend=backend)
    compiled = module._compiled_call_impl  # what nn.Module.__call__ runs once compiled

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- any compiler failure: fall back to the eager module
            module._compiled_call_impl = None
            first = (str(e).strip().splitlines() or [""])[0]
            print(f"warning: torch.compile of the {name} failed ({type(e).__name__}: {first[:200]}); "
                  "running it uncompiled", file=sys.stderr)
            return module(*args, **kwargs)

    module._compiled_call_impl = call


def apply_to_pipeline(pipe, fast: FastPaths) -> None:
    """The sampling switches on a loaded diffusers pipeline (its ``unet``, or ``transformer``, and VAE)."""
    set_tf32(fast.tf32)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if fast.channels_last:
        for part in (denoiser, getattr(pipe, "vae", None)):
            if part is not None:
                part.to(memory_format=torch.channels_last)
    if fast.compile and denoiser is not None:
        compile_guarded(denoiser, "U-Net", fast.compile_mode)


def apply_to_training(model: torch.nn.Module, fast: TrainFastPaths) -> None:
    """The training switches that act on the trained model (the optimizer's is :func:`fused_adamw`)."""
    set_tf32(fast.tf32)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    if fast.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if fast.compile:  # in place, before accelerate wraps it: checkpoints keep the module's own keys
        compile_guarded(model, "trained model", fast.compile_mode)


def enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Gradient checkpointing in every outermost diffusers / transformers model inside ``model`` that has
    trained parameters (a model enables its own sub-models); returns how many were switched (none
    can be in a plain torch module)."""
    switched: list[str] = []
    for name, m in model.named_modules():
        if any(name == s or name.startswith(f"{s}.") or s == "" for s in switched):
            continue
        if not any(p.requires_grad for p in m.parameters()):
            continue
        if getattr(m, "_supports_gradient_checkpointing", False) and hasattr(m, "enable_gradient_checkpointing"):
            m.enable_gradient_checkpointing()  # diffusers ModelMixin
        elif getattr(m, "supports_gradient_checkpointing", False) and hasattr(m, "gradient_checkpointing_enable"):
            m.gradient_checkpointing_enable()  # transformers PreTrainedModel
        else:
            continue
        switched.append(name)
    return len(switched)


def fused_adamw(choice: bool | None, device: torch.device) -> bool:
    """Whether AdamW runs fused: ``choice``, or by device when None (fused on the CPU only)."""
    return device.type == "cpu" if choice is None else bool(choice)
