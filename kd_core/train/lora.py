"""LoRA knowledge transfer: a student pipeline LoRA-tuned (peft) on a teacher's images or captions.

Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models": each targeted linear layer
W gets a trainable low-rank update (alpha / r) * B A, with W frozen. Targets default to the U-Net
attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) and, when asked, the CLIP text
encoder's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, ``fc1``, ``fc2``). The objective is
the student's own denoising loss on the new images (the *task loss*): for knowledge transfer the
images are the teacher's, so the student learns the teacher's output distribution.

The adapter is saved in diffusers format (``save_lora_weights``; ``pipe.load_lora_weights`` reads
it) and, on request, in kohya format for A1111 / ComfyUI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers.training_utils import cast_training_params
from diffusers.utils import convert_state_dict_to_kohya
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from kd_core.captions import DataConfig, load_pairs
from kd_core.errors import KDError
from kd_core.io import atomic_dir, canonical_safetensors_header, write_json
from kd_core.models.folders import example_targets, missing_targets
from kd_core.models.loading import image_size, load_pipeline
from kd_core.seeding import resolve_device
from kd_core.sources import fingerprint
from kd_core.train.data import encode_pairs, encode_text_batch, sdxl_added_cond
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
    run_precision,
    weight_dtype,
)

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
KOHYA_FILE = "kohya_lora.safetensors"


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    unet_targets: tuple[str, ...] = UNET_TARGETS
    text_encoder: bool = False
    text_targets: tuple[str, ...] = TEXT_TARGETS
    resolution: int | None = None  # None: the student's native size
    val_fraction: float = 0.1
    snr_gamma: float | None = None  # Min-SNR-gamma weighting of the task loss; None: plain MSE
    # training captions replaced by the empty prompt (diffusers' --proportion_empty_prompts), so that
    # the unconditional prediction classifier-free guidance subtracts is tuned with the conditional one
    proportion_empty_prompts: float = 0.0
    kohya: bool = False


def _peft_config(cfg: LoRAConfig, targets: tuple[str, ...]) -> LoraConfig:
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, init_lora_weights="gaussian",
                      target_modules=list(targets))


def require_targets(pipe, cfg: LoRAConfig) -> None:
    """Every LoRA target names a module of the modules it adapts (peft skips a target that names none,
    or fails with a traceback when none matches); one line naming the key otherwise."""
    parts = [("unet", cfg.unet_targets, "lora.unet_targets")]
    if cfg.text_encoder:
        parts += [(name, cfg.text_targets, "lora.text_targets") for name in ("text_encoder", "text_encoder_2")
                  if getattr(pipe, name, None) is not None]
    for part, targets, key in parts:
        require_module_targets(getattr(pipe, part), targets, key, part)


def require_module_targets(module: torch.nn.Module, targets: tuple[str, ...], key: str, part: str) -> None:
    missing = missing_targets((name for name, _ in module.named_modules()), targets)
    if missing:
        layers = example_targets(n for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
        raise KDError(f"config key '{key}' has {missing}, which name no module of the student's {part}; "
                      f"its Linear and Conv layers are named e.g. {layers}")


def add_lora(pipe, cfg: LoRAConfig, weights: torch.dtype = torch.float32) -> dict[str, torch.nn.Module]:
    """Freeze the pipeline, add LoRA adapters; returns the modules that carry trainable weights.

    ``weights``: the dtype of the frozen U-Net and text encoders (the training precision under fp16 /
    bf16 autocast, as the diffusers LoRA scripts cast them: half the memory and no casts per layer);
    the VAE is left as it is (the latents are cached before) and the adapters train in fp32."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
            if name != "vae":
                cast_frozen(module, weights)
    pipe.unet.add_adapter(_peft_config(cfg, cfg.unet_targets))
    modules = {"unet": pipe.unet}
    if cfg.text_encoder:
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).add_adapter(_peft_config(cfg, cfg.text_targets))
                modules[name] = getattr(pipe, name)
    cast_training_params(list(modules.values()), torch.float32)  # adapters train in fp32 over half-precision weights
    return modules


def cast_frozen(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """``module``'s weights to ``dtype``, but those its class keeps in fp32 (``_keep_in_fp32_modules``, as
    ``from_pretrained(torch_dtype=...)`` keeps them). Not diffusers' ``ModelMixin.to(dtype)``: it warns at
    every cast, even of a model that keeps no module in fp32."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    torch.nn.Module.to(module, dtype)
    for name, p in module.named_parameters():
        if keep & set(name.split(".")):
            p.data = p.data.float()


class LoRAStudent(torch.nn.ModuleDict):
    """The adapted modules (``unet``, and the text encoders when they are tuned) as one module whose
    forward is the conditioned denoiser: every trained forward goes through it, so that DDP (several
    processes) sees, and averages, the gradients of every adapter."""

    def __init__(self, modules: dict[str, torch.nn.Module], conditioning):
        super().__init__(modules)
        self.conditioning = conditioning  # (example ids, empty-prompt rows) -> the U-Net's conditioning kwargs

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, drop: torch.Tensor | None = None):
        return self["unet"](noisy, t, **self.conditioning(ids, drop)).sample


def save_lora(pipe, modules: dict[str, torch.nn.Module], out_dir: str | Path, kohya: bool = False,
              metadata: dict | None = None) -> None:
    """Write the adapter atomically: diffusers ``save_lora_weights`` (+ kohya file) + ``lora_config.json``."""
    # peft's key format (``lora_A`` / ``lora_B``), which ``load_lora_weights`` reads as it is. Not
    # ``convert_state_dict_to_diffusers``: it renames only the attention projections (``to_q.lora.down``),
    # and diffusers then takes the mixed dict for peft's format and drops every renamed key, so an
    # adapter on attention and convolution layers reloaded without its attention part
    layers = {f"{name}_lora_layers": get_peft_model_state_dict(m) for name, m in modules.items()}
    # rank and alpha travel with the weights; without them a loader assumes alpha = rank. Dropout is
    # a training setting: diffusers' load_lora_weights leaves the dropout it creates in training mode,
    # so an adapter saved with its dropout sampled with random masks in a plain diffusers pipeline
    # peft keeps target_modules as a set, whose order changes from process to process: sorted, so that
    # the same weights make the same file (a consumer keyed on its bytes does not start again)
    layers |= {f"{name}_lora_adapter_metadata": {k: sorted(v) if isinstance(v, set) else v
                                                 for k, v in m.peft_config["default"].to_dict().items()}
               | {"lora_dropout": 0.0} for name, m in modules.items()}
    with atomic_dir(out_dir) as tmp:
        type(pipe).save_lora_weights(tmp, safe_serialization=True, **layers)
        canonical_safetensors_header(tmp / "pytorch_lora_weights.safetensors")  # the same adapter, the same bytes
        if kohya:
            kohya_sd = {}
            for name, m in modules.items():
                two = "text_encoder_2" in modules  # kohya names: lora_te (SD 1.x), lora_te1 / lora_te2 (SDXL)
                prefix = {"unet": "lora_unet", "text_encoder": "lora_te1" if two else "lora_te",
                          "text_encoder_2": "lora_te2"}[name]
                sd = convert_state_dict_to_kohya(get_peft_model_state_dict(m))
                # diffusers writes alpha = rank for every module; the trained scale is alpha / rank
                alpha = float(m.peft_config["default"].lora_alpha)
                kohya_sd |= {f"{prefix}_{k}": torch.tensor(alpha) if k.endswith(".alpha") else v.contiguous()
                             for k, v in sd.items()}
            save_file(kohya_sd, str(tmp / KOHYA_FILE))
        write_json(tmp / "lora_config.json", metadata or {})


def text_conditioning(pipe, cache: dict[str, torch.Tensor], prompts: list[str], cfg: LoRAConfig, size: int,
                      device: torch.device):
    """``conditioning(ids, drop) -> U-Net kwargs``: the text conditioning of examples ``ids`` (cached
    embeddings, or the text encoders run anew when they are tuned); rows where ``drop`` is set get the
    empty prompt's (SDXL: pooled embedding and size ids too)."""
    pidx = cache["prompt_index"]
    xl = "pooled_embeds" in cache or getattr(pipe, "text_encoder_2", None) is not None
    with torch.no_grad():  # a constant of training (the text encoders are frozen, or tuned and re-run each step)
        empty = encode_text_batch(pipe, [""]) if cfg.proportion_empty_prompts > 0 and not cfg.text_encoder else {}

    def conditioning(ids: torch.Tensor, drop: torch.Tensor | None = None) -> dict:
        """The U-Net's text conditioning of ``ids``; rows where ``drop`` is set get the empty prompt's."""
        pi = pidx[ids]
        if cfg.text_encoder:
            captions = [prompts[i] for i in pi.tolist()]
            if drop is not None:
                captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            enc = pipe.encode_prompt(captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
            emb, pooled = enc[0], (enc[2] if xl else None)
        else:
            emb = cache["prompt_embeds"][pi]
            pooled = cache["pooled_embeds"][pi] if xl else None
            if drop is not None:
                emb = torch.where(drop[:, None, None], empty["prompt_embeds"].expand_as(emb), emb)
                if xl:
                    pooled = torch.where(drop[:, None], empty["pooled_embeds"].expand_as(pooled), pooled)
            emb, pooled = emb.to(device), (pooled.to(device) if xl else None)
        kw: dict = {"encoder_hidden_states": emb}
        if xl:
            kw["added_cond_kwargs"] = sdxl_added_cond(pooled, size, emb.dtype, device)
        return kw

    return conditioning


class LoRALoss:
    """The LoRA task loss as an object given the prepared student (a :class:`LoRAStudent`, DDP-wrapped
    with several processes): the noise schedule and the cached latents of the training and
    validation images live here. A step draws each example's latent from its cached posterior, noises
    it, and, with ``proportion_empty_prompts``, drops its caption (diffusers' ``--proportion_empty_prompts``)."""

    def __init__(self, diffusion: Diffusion, cache: dict[str, torch.Tensor], cfg: LoRAConfig, device: torch.device,
                 split: tuple[torch.Tensor, torch.Tensor], val_seed: int):
        self.diffusion, self.cfg, self.device = diffusion, cfg, device
        self.mean, self.std = cache["latent_mean"], cache["latent_std"]
        self.val_ids, self.train_ids = split
        self.val_seed = val_seed

    def draw(self, ids: torch.Tensor, gen: torch.Generator) -> Noised:
        return self.diffusion.draw(sample_posterior(self.mean[ids], self.std[ids], gen), gen)

    def terms(self, model: torch.nn.Module, ids: torch.Tensor, noised: Noised,
              drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        pred = model(noised.noisy.to(self.device), noised.t.to(self.device), ids, drop).float()
        weighted, per = self.diffusion.loss(pred, noised)
        return {"loss": weighted, "task_mse": per.mean()}

    def __call__(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        ids = self.train_ids[batch.indices]
        noised = self.draw(ids, gen)
        p_empty = self.cfg.proportion_empty_prompts
        drop = torch.rand(len(ids), generator=gen) < p_empty if p_empty > 0 else None
        return self.terms(model, batch.shard(ids), batch.shard(noised), None if drop is None else batch.shard(drop))

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        return {"loss": chunked_mean(lambda ids, gen: self.terms(model, ids, self.draw(ids, gen)), self.val_ids,
                                     self.val_seed)["task_mse"]}


def train_lora(student: str, data: DataConfig, adapter_dir: str | Path, run_dir: str | Path, cfg: LoRAConfig,
               train: TrainConfig) -> TrainResult:
    """LoRA-tune ``student`` (hub id or folder) on ``data``; the adapter goes to ``adapter_dir``.

    ``run_dir`` keeps the encoded-data cache, resumable checkpoints and ``loss.parquet``.
    """
    run_dir = Path(run_dir)
    device = resolve_device(train.device)
    pipe = load_pipeline(student, device, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    size = image_size(pipe, cfg.resolution, "lora.resolution")
    require_targets(pipe, cfg)
    pairs = load_pairs(data)
    cache = encode_pairs(pipe, pairs, size, run_dir / "cache.safetensors", encode_text=not cfg.text_encoder)
    prompts = sorted(pairs["prompt"].unique())
    conditioning = text_conditioning(pipe, cache, prompts, cfg, size, device)  # the empty prompt in fp32, as the cache
    torch.manual_seed(train.seed)  # LoRA's random initialisation of A
    modules = add_lora(pipe, cfg, weight_dtype(run_precision(train)))  # the precision the Trainer trains in
    loss = LoRALoss(Diffusion(pipe.scheduler.config, cfg.snr_gamma), cache, cfg, device,
                    holdout_split(len(pairs), cfg.val_fraction, train.seed), train.seed + VAL_SEED)
    key = run_key(student=student, data=asdict(data), lora=asdict(cfg), size=size, files=list(pairs["image"]),
                  # contents, not only names: retrained models or remade images restart the run
                  weights=fingerprint(student), data_key=bytes(cache["key"].tolist()).decode())
    trainer = Trainer(LoRAStudent(modules, conditioning), loss, len(loss.train_ids), run_dir, train,
                      val_fn=loss.validate if len(loss.val_ids) else None, name="lora", run_key=key)
    result = trainer.fit()
    if trainer.accelerator.is_main_process:  # one writer: every rank ends with the same weights
        save_lora(pipe, modules, adapter_dir, cfg.kohya,
                  {"base_model": student, "lora": asdict(cfg), "train": asdict(train), "data": asdict(data), "resolution": size,
                   "steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early})
    return result
