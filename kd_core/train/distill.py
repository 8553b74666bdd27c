"""Distilling a teacher U-Net into a student U-Net on noised latents: the part BK-SDM block
distillation (:mod:`kd_core.train.block_kd`) and the width students of the model-size study
(:mod:`kd_core.train.size_study`) share.

    loss = w_task * MSE(student noise, true noise)                      (task loss)
         + w_out  * MSE(student output, teacher output)                 (output-level KD)
         + w_feat * sum_l MSE(student block l output, teacher block l)  (feature-level KD)

Block outputs are collected by forward hooks through an explicit teacher-to-student map,
registered on the unwrapped modules, so that the student may be wrapped by accelerate (DDP) for
several processes. The teacher is frozen, in half precision on GPU, and kept out of
``accelerator.prepare``. Every term goes to ``loss.parquet`` raw (``task``, ``out_kd``,
``feat_kd``) and weighted (``*_weighted``). The trained student U-Net, with the teacher's VAE, text
encoder, tokenizer and scheduler, is saved as a pipeline folder that
``DiffusionPipeline.from_pretrained`` loads (an SDXL teacher's: a ``StableDiffusionXLPipeline``, trained
with SDXL's micro-conditioning, pooled text embedding and size ids, as its pipeline passes them). A pixel-space teacher (``DDPMPipeline``: no VAE, no
text) is distilled on the images themselves, an unconditional latent one (``LDMPipeline``) on its
autoencoder's latents, both without text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from kd_core.captions import DataConfig, load_pairs
from kd_core.errors import KDError
from kd_core.io import atomic_dir, write_json
from kd_core.models.loading import image_size, load_pipeline, reset_tokenizers
from kd_core.models.params import count_parameters
from kd_core.seeding import resolve_device
from kd_core.sources import fingerprint
from kd_core.train.data import encode_pairs, sdxl_added_cond
from kd_core.train.diffusion import Diffusion, Noised, sample_posterior
from kd_core.train.loop import (
    VAL_SEED,
    Batch,
    TrainConfig,
    Trainer,
    TrainResult,
    chunked_mean,
    holdout_split,
    run_key,
)


class KDWeights(Protocol):
    """What the U-Net distillation reads of a study's config."""

    w_task: float
    w_out: float
    w_feat: float
    feature_kd: bool
    resolution: int | None
    val_fraction: float
    teacher_dtype: str


class FeatureHooks:
    """Forward hooks that keep the outputs of named submodules (the first element of a tuple)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise KDError(f"feature KD: the model has no module {name!r}") from None
            self._handles.append(module.register_forward_hook(self._keep(name)))

    def _keep(self, name: str):
        def hook(_module, _inputs, output):
            self.outputs[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def kd_terms(student_out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor,
             student_feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor], fmap: dict[str, str],
             cfg: KDWeights) -> dict[str, torch.Tensor]:
    """The BK-SDM loss terms, raw and weighted; ``loss`` is the weighted sum."""
    task = F.mse_loss(student_out.float(), target.float())
    out_kd = F.mse_loss(student_out.float(), teacher_out.float())
    feat = [F.mse_loss(student_feats[s].float(), teacher_feats[t].float()) for t, s in fmap.items()]
    feat_kd = torch.stack(feat).sum() if feat else torch.zeros((), device=task.device)
    w_feat = cfg.w_feat if cfg.feature_kd else 0.0
    terms = {"task": task, "out_kd": out_kd, "feat_kd": feat_kd, "task_weighted": cfg.w_task * task,
             "out_kd_weighted": cfg.w_out * out_kd, "feat_kd_weighted": w_feat * feat_kd}
    terms["loss"] = terms["task_weighted"] + terms["out_kd_weighted"] + terms["feat_kd_weighted"]
    return terms


class UNetKD:
    """The distillation loss as an object given the prepared student (as NVlabs/edm's loss objects are
    given the DDP-wrapped network): the frozen teacher, the feature hooks, the noise schedule and the
    cached latents of the training and validation images live here."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, fmap: dict[str, str],
                 cache: dict[str, torch.Tensor], diffusion: Diffusion, cfg: KDWeights, device: torch.device,
                 split: tuple[torch.Tensor, torch.Tensor], val_seed: int, size: int):
        self.teacher, self.fmap, self.cache, self.diffusion, self.cfg, self.device = teacher, fmap, cache, diffusion, cfg, device
        self.size = size  # SDXL: the image size its micro-conditioning states
        self.val_ids, self.train_ids = split
        self.val_seed = val_seed
        self.t_hooks, self.s_hooks = FeatureHooks(teacher, list(fmap)), FeatureHooks(student, list(fmap.values()))

    def draw(self, ids: torch.Tensor, gen: torch.Generator) -> Noised:
        """Latents of images ``ids`` drawn from their cached posteriors, then noised."""
        return self.diffusion.draw(sample_posterior(self.cache["latent_mean"][ids], self.cache["latent_std"][ids], gen), gen)

    def terms(self, model: torch.nn.Module, ids: torch.Tensor, noised: Noised) -> dict[str, torch.Tensor]:
        """The KD terms of ``model`` (the student) on images ``ids`` noised as ``noised``."""
        noisy, t = noised.noisy.to(self.device), noised.t.to(self.device)
        emb = self.cache.get("prompt_embeds")  # unconditional DDPMs: none
        cond = {} if emb is None else {"encoder_hidden_states": emb[self.cache["prompt_index"][ids]].to(self.device)}
        dtype = self.teacher.dtype
        t_cond = {k: v.to(dtype) for k, v in cond.items()}
        if "pooled_embeds" in self.cache:  # SDXL: pooled text embedding and size ids, as its pipeline passes them
            pooled = self.cache["pooled_embeds"][self.cache["prompt_index"][ids]]
            cond["added_cond_kwargs"] = sdxl_added_cond(pooled, self.size, torch.float32, self.device)
            t_cond["added_cond_kwargs"] = sdxl_added_cond(pooled, self.size, dtype, self.device)
        with torch.no_grad():
            t_out = self.teacher(noisy.to(dtype), t, **t_cond).sample
        t_feats = self.t_hooks.pop()
        s_out = model(noisy, t, **cond).sample
        return kd_terms(s_out, t_out, noised.target.to(self.device), self.s_hooks.pop(), t_feats, self.fmap, self.cfg)

    def __call__(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        ids = self.train_ids[batch.indices]
        return self.terms(model, batch.shard(ids), batch.shard(self.draw(ids, gen)))

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        return chunked_mean(lambda ids, gen: self.terms(model, ids, self.draw(ids, gen)), self.val_ids, self.val_seed)

    def remove(self) -> None:
        self.t_hooks.remove()
        self.s_hooks.remove()


def save_student_pipeline(pipe, student: torch.nn.Module, out_dir: str | Path, info_file: str, metadata: dict) -> None:
    """The teacher pipeline with the student U-Net, as a ``save_pretrained`` folder (atomically), plus ``info_file``."""
    teacher_unet = pipe.unet
    pipe.unet = student
    reset_tokenizers(pipe)  # the same model, the same bytes, whether or not its tokenizer ran
    try:
        with atomic_dir(out_dir) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            write_json(tmp / info_file, metadata)
    finally:
        pipe.unet = teacher_unet


def distill_unet(teacher: str, data: DataConfig, out_dir: str | Path, run_dir: str | Path, cfg: KDWeights,
                 train: TrainConfig, make_student: Callable[[torch.nn.Module], torch.nn.Module],
                 make_feature_map: Callable[[torch.nn.Module, torch.nn.Module], dict[str, str]] | None = None,
                 name: str = "student", info_file: str = "distill.json", info: dict | None = None) -> TrainResult:
    """Distil the U-Net of ``teacher`` into ``make_student(teacher_unet)`` with task + output-KD (+ feature-KD) loss.

    The shared part of BK-SDM block distillation and the width students of the model-size study:
    noised latents of ``data``'s images (cached VAE posteriors), the frozen teacher's prediction
    as the output-KD target, the shared training loop, and a pipeline folder with the student
    U-Net plus ``info_file`` (settings, parameter counts, steps) as the result.
    """
    run_dir = Path(run_dir)
    device = resolve_device(train.device)
    pipe = load_pipeline(teacher, device, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    size = image_size(pipe, cfg.resolution, "the training resolution")
    pairs = load_pairs(data)
    cache = encode_pairs(pipe, pairs, size, run_dir / "cache.safetensors")
    t_unet = pipe.unet.eval().requires_grad_(False)
    student = make_student(t_unet).to(device).train()  # refuses a teacher whose layout it does not know
    half = cfg.teacher_dtype == "fp16" or (cfg.teacher_dtype == "auto" and device.type == "cuda")
    if half:
        t_unet.to(torch.float16)
    fmap = make_feature_map(t_unet, student) if make_feature_map is not None else {}
    split = holdout_split(len(pairs), cfg.val_fraction, train.seed)
    loss = UNetKD(t_unet, student, fmap, cache, Diffusion(pipe.scheduler.config), cfg, device, split,
                  train.seed + VAL_SEED, size)
    key = run_key(teacher=teacher, data=asdict(data), kd=asdict(cfg), size=size, files=list(pairs["image"]),
                  # contents, not only names: retrained models or remade images restart the run
                  weights=fingerprint(teacher), data_key=bytes(cache["key"].tolist()).decode())
    trainer = Trainer(student, loss, len(loss.train_ids), run_dir, train,
                      val_fn=loss.validate if len(loss.val_ids) else None, name=name, run_key=key)
    try:
        result = trainer.fit()
    finally:
        loss.remove()
    student = trainer.unwrapped.eval()
    if half:
        t_unet.to(torch.float32)
    if trainer.accelerator.is_main_process:
        save_student_pipeline(pipe, student, out_dir, info_file, {
            "teacher": teacher, **(info or {}), "train": asdict(train), "data": asdict(data), "resolution": size,
            "feature_map": fmap, "params_teacher": count_parameters(t_unet), "params_student": count_parameters(student),
            "steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early})
    return result
