"""Sampling and training at SD 1.5 / BK-SDM / SDXL sizes, each against plain diffusers in this process.

    python bench/gpu_suite.py                       # on the GPU, real sizes (random weights, no download)
    python bench/gpu_suite.py --device cpu --tiny   # the same code on the project's tiny pipelines (CI)
    python bench/gpu_suite.py --sections sampling --models sd15 sdxl

Pipelines are built from the public configs (:mod:`kd_core.models.reference`) in the measured
precision (``--dtype auto``: bf16 on a GPU that has it, else fp16; fp32 on the CPU). Sections:

- ``sampling``: denoising steps per second of each U-Net (a step with classifier-free guidance: the
  U-Net sees twice the images), at batch 1 and 8, in native resolution. ``diffusers`` is the
  U-Net as ``from_pretrained`` gives it; the variants are kd_core's switches
  (:mod:`kd_core.fast_paths`): ``channels_last``, ``compile`` (inductor) and ``cuda_graphs``
  (``torch.compile`` ``reduce-overhead``; CUDA only), the compiled ones for SD 1.5 and SDXL at batch 1
  (each is a compilation; ``--compile-models``, ``--compile-batch-sizes``). Each round times a block
  of steps (``--block-seconds`` of them) of the plain U-Net and of every variant, in random order, so
  a ratio is paired within its round;
- ``end_to_end``: images per second through ``kd_core.generate.generate_images`` against a plain
  ``DiffusionPipeline.from_pretrained(...)`` / ``pipe(...)`` loop, same folder, settings and seeds
  (sampling time: each side's pipeline calls, without loading and PNG writing);
- ``training``: optimizer steps per second of a LoRA step (SD 1.5 student, batch 8 and 16), a BK-KD
  step (SD 1.5 teacher frozen in half precision, ``bk_small`` student, feature hooks) and a width
  student step (x0.5), from cached latents, through kd_core's ``Trainer`` and loss objects, each
  against the step of the diffusers example scripts (``train_text_to_image_lora.py``: frozen weights
  in the training precision, trainable ones in fp32, accelerate's mixed precision) written plainly.

Every row has its median over rounds with a bootstrap 95% CI, the paired ratio to plain diffusers
with its CI, the FLOPs of one step (``torch.utils.flop_counter``; forward and backward for training),
the achieved TFLOP/s, MFU against the device's dense bf16/fp16 peak (``--peak-tflops`` for a device
the table below lacks; none on a CPU) and the peak memory. Writes
``results/bench/gpu_suite.parquet`` and prints one markdown table.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kd_core.fast_paths import compile_guarded  # noqa: E402
from kd_core.metrics.bootstrap import bootstrap_ci  # noqa: E402
from kd_core.metrics.efficiency import PeakMemory  # noqa: E402
from kd_core.metrics.latency import count_flops  # noqa: E402
from kd_core.models.reference import MODELS, reference_pipeline, resolution  # noqa: E402
from kd_core.seeding import resolve_device, resolve_dtype  # noqa: E402

SECTIONS = ("sampling", "end_to_end", "training")
#: Dense bf16 / fp16 tensor-core peak, TFLOP/s (vendor datasheets), by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
               "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0, "V100": 125.0,
               "B200": 2250.0}
COLUMNS = ["section", "model", "task", "variant", "batch_size", "resolution", "unit", "value", "ci_low", "ci_high",
           "ratio_diffusers", "ratio_ci_low", "ratio_ci_high", "gflop_per_step", "tflops", "mfu", "peak_memory_mb",
           "rounds", "device", "device_name", "dtype"]


# ---------------------------------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def paired_rounds(blocks: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seconds of each block per round, the blocks of a round in a fresh random order."""
    names = list(blocks)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for i in rng.permutation(len(names)):
            t = _timed(blocks[names[i]], device)
            if r >= warmup:
                times[names[i]].append(t)
    return {n: np.asarray(t) for n, t in times.items()}


def summarize(rates: dict[str, np.ndarray], base: str, rng: np.random.Generator) -> dict[str, dict]:
    """Median rate with its CI, and the median of the paired per-round ratio to ``base`` with its CI."""
    out = {}
    for name, x in rates.items():
        ratio = x / rates[base]
        lo, hi = bootstrap_ci(x, rng, 2000, stat=np.median)
        r_lo, r_hi = bootstrap_ci(ratio, rng, 2000, stat=np.median)
        out[name] = {"value": float(np.median(x)), "ci_low": lo, "ci_high": hi, "ratio_diffusers": float(np.median(ratio)),
                     "ratio_ci_low": r_lo, "ratio_ci_high": r_hi, "rounds": len(x)}
    return out


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    gc.collect()
    with PeakMemory(device) as mem:
        fn()
    return mem.peak_mb


# ---------------------------------------------------------------------------------------------------------------
# sampling: U-Net steps per second


def unet_inputs(pipe, images: int, size: int, device: torch.device, dtype: torch.dtype) -> dict:
    """One guided sampling step's U-Net input for ``images`` images of ``size`` px (the U-Net sees 2x)."""
    n, cfg, side = 2 * images, pipe.unet.config, size // pipe.vae_scale_factor
    gen = torch.Generator("cpu").manual_seed(0)
    x = {"sample": torch.randn((n, cfg.in_channels, side, side), generator=gen).to(device, dtype),
         "timestep": torch.full((n,), 500, device=device),
         "encoder_hidden_states": torch.randn((n, 77, cfg.cross_attention_dim), generator=gen).to(device, dtype)}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        x["added_cond_kwargs"] = {"text_embeds": torch.randn((n, pooled), generator=gen).to(device, dtype),
                                  "time_ids": torch.tensor([size, size, 0, 0, size, size], device=device,
                                                           dtype=dtype).repeat(n, 1)}
    return x


class UNetVariants:
    """One U-Net switched between plain diffusers and kd_core's fast paths without copying it: the
    memory layout is converted, and compiled call paths are swapped in and out."""

    def __init__(self, pipe, device: torch.device):
        self.pipe, self.unet, self.device = pipe, pipe.unet, device
        self.compiled: dict[str, object] = {}
        self.layout = torch.contiguous_format

    def add_compiled(self, name: str, mode: str, backend: str) -> None:
        compile_guarded(self.unet, "U-Net", mode, backend)  # as apply_to_pipeline(FastPaths(compile=True)) does
        self.compiled[name] = self.unet._compiled_call_impl
        self.unet._compiled_call_impl = None

    def set(self, variant: str) -> None:
        layout = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        if layout != self.layout:
            with torch.inference_mode(False):  # weights made in inference mode would fail compiled graphs' guards
                self.unet.to(memory_format=layout)
            self.layout = layout
        self.unet._compiled_call_impl = self.compiled.get(variant)

    def block(self, variant: str, inputs: dict, steps: int) -> Callable[[], object]:
        def run():
            self.set(variant)
            for _ in range(steps):
                self.unet(**inputs)
        return run


def sampling(models, args, device, dtype, rng) -> list[dict]:
    rows = []
    for model in models:
        rows += _sample_one(model, args, device, dtype, rng)
        _free(device)
    return rows


def _sample_one(model: str, args, device, dtype, rng) -> list[dict]:
    compiled = [] if model not in args.compile_models else ["compile"] + (["cuda_graphs"] if device.type == "cuda" else [])
    peak = peak_tflops(device, args.peak_tflops)
    pipe = reference_pipeline(model, device, dtype, tiny=args.tiny)
    unet = pipe.unet.eval().requires_grad_(False)
    v = UNetVariants(pipe, device)
    for name, mode in (("compile", "default"), ("cuda_graphs", "reduce-overhead")):
        if name in compiled:
            v.add_compiled(name, mode, args.compile_backend)
    size = resolution(model, args.tiny)
    rows = []
    for batch in args.batch_sizes:
        variants = ["diffusers", "channels_last"] + (compiled if batch in args.compile_batch_sizes else [])
        inputs = unet_inputs(pipe, batch, size, device, dtype)
        with torch.inference_mode():
            v.set("diffusers")
            gflop = count_flops(lambda: unet(**inputs)) / 1e9  # noqa: B023 -- called at once
            # steps per timed block: given, or as many as fill --block-seconds of the plain U-Net
            steps = args.steps_per_block or max(1, min(50, round(args.block_seconds / (
                _timed(lambda: [unet(**inputs) for _ in range(3)], device) / 3))))  # noqa: B023
            blocks = {name: v.block(name, inputs, steps) for name in variants}
            secs = paired_rounds(blocks, args.rounds, args.warmup, device, rng)
            mem = {name: peak_memory(v.block(name, inputs, 1), device) for name in variants}
        stats = summarize({n: steps / s for n, s in secs.items()}, "diffusers", rng)
        for name in variants:
            s = stats[name]
            tflops = gflop * s["value"] / 1e3
            rows.append({"section": "sampling", "model": model, "task": "unet_step", "variant": name,
                         "batch_size": batch, "resolution": size, "unit": "steps/s", **s, "gflop_per_step": gflop,
                         "tflops": tflops, "mfu": tflops / peak if peak else float("nan"),
                         "peak_memory_mb": mem[name]})
        print(f"sampling {model} batch {batch}: " + ", ".join(f"{n} {stats[n]['value']:.2f} steps/s" for n in variants),
              file=sys.stderr)
    v.set("diffusers")
    return rows


def _free(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# end to end: kd_core.generate against a plain diffusers loop


def end_to_end(models, args, device, dtype, rng) -> list[dict]:
    rows = []
    for model in [m for m in models if m in ("sd15", "sdxl")]:
        with tempfile.TemporaryDirectory() as tmp:
            rows += _end_to_end_one(model, Path(tmp), args, device, dtype, rng)
    return rows


def _plain_loop(folder: Path, prompts: pd.DataFrame, cfg, size: int, dtype: torch.dtype, device: torch.device) -> float:
    """Seconds of a plain diffusers loop's pipeline calls (loaded as diffusers' docs load a model)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    total = 0.0
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts.iloc[start: start + cfg.batch_size]
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in batch["seed"]]
        _sync(device)
        t0 = time.perf_counter()
        pipe(prompt=list(batch["prompt"]), num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
             height=size, width=size, generator=gens)
        _sync(device)
        total += time.perf_counter() - t0
    return total


def _end_to_end_one(model: str, tmp: Path, args, device, dtype, rng) -> list[dict]:
    from kd_core.generate import GenerationConfig, generate_images

    size = resolution(model, args.tiny)
    folder = tmp / model
    reference_pipeline(model, device, dtype, tiny=args.tiny).save_pretrained(folder, safe_serialization=True)
    _free(device)
    n = args.images
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "split": "eval",
                            "prompt": [f"a red circle on a white background, {i}" for i in range(n)],
                            "negative_prompt": "", "seed": list(range(n)), "grammar": "shapes"})
    cfg = GenerationConfig(steps=args.sampling_steps, guidance_scale=7.5, batch_size=args.e2e_batch, device=str(device),
                           dtype={torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype])
    kd_s, plain_s = [], []
    for rep in range(args.e2e_repeats):  # alternating, each side loading its pipeline anew
        manifest = generate_images(str(folder), prompts, tmp / f"kd{rep}", cfg, model)
        kd_s.append(float(manifest["wall_time_s"].sum()))  # the pipeline calls' time, as below
        _free(device)
        plain_s.append(_plain_loop(folder, prompts, cfg, size, dtype, device))
        _free(device)
    stats = summarize({"kd_core": n / np.asarray(kd_s), "diffusers": n / np.asarray(plain_s)}, "diffusers", rng)
    print(f"end to end {model}: kd_core {stats['kd_core']['value']:.3f}, diffusers "
          f"{stats['diffusers']['value']:.3f} images/s", file=sys.stderr)
    return [{"section": "end_to_end", "model": model, "task": "generate", "variant": name, "batch_size": args.e2e_batch,
             "resolution": size, "unit": "images/s", **stats[name]} for name in ("diffusers", "kd_core")]


# ---------------------------------------------------------------------------------------------------------------
# training steps


def _cache(n: int, side: int, emb_dim: int) -> dict[str, torch.Tensor]:
    """A cached-latent table as kd_core.train.data.encode_pairs writes one (random values; ``side``: latent px)."""
    gen = torch.Generator().manual_seed(0)
    return {"latent_mean": torch.randn((n, 4, side, side), generator=gen),
            "latent_std": torch.full((n, 4, side, side), 0.05),
            "prompt_embeds": torch.randn((4, 77, emb_dim), generator=gen), "prompt_index": torch.arange(n) % 4}


def training(models, args, device, dtype, rng) -> list[dict]:
    if "sd15" not in models:
        return []
    rows = []
    tasks = [("lora", b) for b in args.train_batch_sizes]
    tasks += [("bk_kd", args.train_batch_sizes[0]), ("width_student", args.train_batch_sizes[0])]
    for task, batch in tasks:
        with tempfile.TemporaryDirectory() as tmp:
            rows += _train_one(task, batch, Path(tmp), args, device, dtype, rng)
        _free(device)
    return rows


def _student(teacher: torch.nn.Module, task: str, device: torch.device) -> tuple[torch.nn.Module, dict[str, str]]:
    """The student of a distillation task and its feature map (teacher block -> student block)."""
    from kd_core.models.bk_sdm import build_student, feature_map
    from kd_core.models.width import build_width_student

    if task == "bk_kd":
        student = build_student(teacher, "bk_small").to(device).train()
        return student, feature_map(teacher, student, "bk_small")
    return build_width_student(teacher, 0.5).to(device).train(), {}


def _kd_core_step(pipe, task: str, batch: int, cache: dict, run_dir: Path, args, device, mixed: str):
    """(one optimizer step of kd_core's Trainer with the loss object the workflow's rule trains with, cleanup)."""
    from kd_core.train.block_kd import BlockKDConfig
    from kd_core.train.diffusion import Diffusion
    from kd_core.train.distill import UNetKD
    from kd_core.train.loop import TrainConfig, Trainer, weight_dtype
    from kd_core.train.lora import LoRAConfig, LoRALoss, LoRAStudent, add_lora, text_conditioning

    size = resolution("sd15", args.tiny)
    diffusion = Diffusion(pipe.scheduler.config)
    split = (torch.arange(0), torch.arange(len(cache["latent_mean"])))
    if task == "lora":
        cfg = LoRAConfig(dropout=0.0)
        model = LoRAStudent(add_lora(pipe, cfg, weight_dtype(mixed)), text_conditioning(pipe, cache, ["a"] * 4, cfg, size, device))
        loss = LoRALoss(diffusion, cache, cfg, device, split, 0)
    else:
        teacher = pipe.unet.eval().requires_grad_(False)
        model, fmap = _student(teacher, task, device)
        teacher.to(torch.float16 if device.type == "cuda" else torch.float32)  # distill_unet's teacher_dtype auto
        loss = UNetKD(teacher, model, fmap, cache, diffusion, BlockKDConfig(), device, split, 0, size)
    train = TrainConfig(batch_size=batch, max_steps=10**6, checkpoint_every=10**6, mixed_precision=mixed,
                        device=str(device), lr_scheduler="constant")
    trainer = Trainer(model, loss, len(split[1]), run_dir, train, name=task, run_key="bench")
    counter = [0]

    def step():
        trainer._step(counter[0])  # one optimizer step, exactly as Trainer.fit runs it
        counter[0] += 1

    return step, getattr(loss, "remove", lambda: None)


def _plain_step(task: str, batch: int, cache: dict, args, device, dtype, mixed: str):
    """(one step as the diffusers example scripts write it, cleanup): frozen weights in the training
    precision, trainable ones in fp32, accelerate's mixed precision, AdamW, gradient clipping."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params

    from kd_core.train.distill import FeatureHooks
    from kd_core.train.lora import LoRAConfig, _peft_config

    pipe = reference_pipeline("sd15", device, dtype if device.type == "cuda" else torch.float32, tiny=args.tiny)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    acc = Accelerator(mixed_precision=mixed, cpu=device.type == "cpu")
    draws = torch.Generator().manual_seed(0)

    def noised(weights: torch.dtype):
        ids = torch.randint(0, len(cache["latent_mean"]), (batch,), generator=draws)
        mean, std = cache["latent_mean"][ids], cache["latent_std"][ids]
        z0 = mean + std * torch.randn(mean.shape, generator=draws)
        noise = torch.randn(z0.shape, generator=draws)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=draws)
        emb = cache["prompt_embeds"][cache["prompt_index"][ids]]
        return (scheduler.add_noise(z0, noise, t).to(device, weights), t.to(device), emb.to(device, weights),
                noise.to(device))

    hooks: list = []
    if task == "lora":
        model = pipe.unet.requires_grad_(False)
        model.add_adapter(_peft_config(LoRAConfig(dropout=0.0), LoRAConfig().unet_targets))
        cast_training_params(model, torch.float32)

        def loss_fn(m):
            noisy, t, emb, noise = noised(pipe.unet.dtype)
            return F.mse_loss(m(noisy, t, emb).sample.float(), noise.float())
    else:
        teacher = pipe.unet.eval().requires_grad_(False)
        model, fmap = _student(teacher.float(), task, device)
        teacher.to(torch.float16 if device.type == "cuda" else torch.float32)
        hooks = [FeatureHooks(teacher, list(fmap)), FeatureHooks(model, list(fmap.values()))]

        def loss_fn(m):
            noisy, t, emb, noise = noised(torch.float32)
            with torch.no_grad():
                t_out = teacher(noisy.to(teacher.dtype), t, emb.to(teacher.dtype)).sample
            t_feats = hooks[0].pop()
            s_out = m(noisy, t, emb).sample.float()
            s_feats = hooks[1].pop()
            loss = F.mse_loss(s_out, noise.float()) + F.mse_loss(s_out, t_out.float())
            for tn, sn in fmap.items():
                loss = loss + F.mse_loss(s_feats[sn].float(), t_feats[tn].float())
            return loss

    params = [p for p in model.parameters() if p.requires_grad]
    model, opt = acc.prepare(model, torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2))

    def step():
        with acc.autocast():
            loss = loss_fn(model)
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, lambda: [h.remove() for h in hooks]


def _train_one(task: str, batch: int, tmp: Path, args, device, dtype, rng) -> list[dict]:
    mixed = "no" if device.type == "cpu" else ("bf16" if dtype == torch.bfloat16 else "fp16")
    size = resolution("sd15", args.tiny)
    pipe = reference_pipeline("sd15", device, torch.float32, tiny=args.tiny)  # as train_lora / distill_unet load it
    cache = _cache(max(64, 4 * batch), size // pipe.vae_scale_factor, pipe.unet.config.cross_attention_dim)
    kd_step, kd_done = _kd_core_step(pipe, task, batch, cache, tmp / "run", args, device, mixed)
    plain, plain_done = _plain_step(task, batch, cache, args, device, dtype, mixed)
    gflop = count_flops(kd_step) / 1e9
    n = args.train_steps_per_block
    blocks = {"kd_core": lambda: [kd_step() for _ in range(n)], "diffusers": lambda: [plain() for _ in range(n)]}
    secs = paired_rounds(blocks, args.rounds, args.warmup, device, rng)
    mem = {"kd_core": peak_memory(kd_step, device), "diffusers": peak_memory(plain, device)}
    kd_done()
    plain_done()
    stats = summarize({k: n / s for k, s in secs.items()}, "diffusers", rng)
    peak = peak_tflops(device, args.peak_tflops)
    student = {"lora": "sd15", "bk_kd": "bk_small", "width_student": "width_x0.5"}[task]
    rows = []
    for name in ("diffusers", "kd_core"):
        s = stats[name]
        tflops = gflop * s["value"] / 1e3
        for unit, per in (("steps/s", 1), ("images/s", batch)):
            scaled = {k: v * per if k in ("value", "ci_low", "ci_high") else v for k, v in s.items()}
            rows.append({"section": "training", "model": student, "task": task, "variant": name, "batch_size": batch,
                         "resolution": size, "unit": unit, **scaled, "gflop_per_step": gflop, "tflops": tflops,
                         "mfu": tflops / peak if peak else float("nan"), "peak_memory_mb": mem[name]})
    print(f"training {task} batch {batch}: kd_core {stats['kd_core']['value']:.3f}, diffusers "
          f"{stats['diffusers']['value']:.3f} steps/s", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------------------------


def markdown(df: pd.DataFrame) -> str:
    cols = ["section", "model", "task", "variant", "batch_size", "resolution", "unit", "value", "ci", "ratio_diffusers",
            "ratio_ci", "tflops", "mfu", "peak_memory_mb"]
    t = df.assign(ci=[f"[{a:.3g}, {b:.3g}]" for a, b in zip(df.ci_low, df.ci_high, strict=True)],
                  ratio_ci=[f"[{a:.3f}, {b:.3f}]" for a, b in zip(df.ratio_ci_low, df.ratio_ci_high, strict=True)])[cols]
    fmt = {"value": "{:.3g}", "ratio_diffusers": "{:.3f}", "tflops": "{:.3g}", "mfu": "{:.1%}", "peak_memory_mb": "{:.0f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in t.itertuples(index=False):
        cells = [("" if pd.isna(v) else fmt[c].format(v)) if c in fmt else str(v) for c, v in zip(cols, r, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--tiny", action="store_true", help="the project's tiny pipelines (64 px), for a CPU")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    # None: the real-size default, or with --tiny the small one after it (a CPU run of every code path in ~1 min)
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="images per sampling step (1 8; --tiny 1 2)")
    ap.add_argument("--train-batch-sizes", type=int, nargs="+", help="training batches (8 16; --tiny 2 4)")
    ap.add_argument("--rounds", type=int, help="timed rounds (8; --tiny 2)")
    ap.add_argument("--warmup", type=int, help="untimed rounds first, where compilation happens (2; --tiny 1)")
    ap.add_argument("--steps-per-block", type=int, help="U-Net steps per timed block (as many as fill "
                                                         "--block-seconds; --tiny 1)")
    ap.add_argument("--block-seconds", type=float, default=0.3, help="time of a timed block of U-Net steps")
    ap.add_argument("--train-steps-per-block", type=int, help="optimizer steps per timed block (5; --tiny 1)")
    ap.add_argument("--images", type=int, help="end to end: images per run (16; --tiny 4)")
    ap.add_argument("--e2e-batch", type=int, help="end to end: batch size (8; --tiny 2)")
    ap.add_argument("--e2e-repeats", type=int, default=2, help="end to end: runs of each side, alternating")
    ap.add_argument("--sampling-steps", type=int, help="end to end: denoising steps per image (20; --tiny 2)")
    ap.add_argument("--compile-models", nargs="*", choices=MODELS,
                    help="models timed with the torch.compile variants (sd15 sdxl; --tiny sd15); none: no compile")
    ap.add_argument("--compile-batch-sizes", type=int, nargs="+",
                    help="batch sizes timed compiled (1: each is a compilation of a minute or more on a GPU)")
    ap.add_argument("--compile-backend", help="torch.compile backend (inductor; --tiny on a CPU aot_eager: "
                                              "the same capture without a C++ build)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16/fp16 peak, for MFU")
    ap.add_argument("--out", default="results/bench/gpu_suite.parquet")
    args = ap.parse_args(argv)
    defaults = {  # key: (real size, --tiny)
        "batch_sizes": ([1, 8], [1, 2]), "train_batch_sizes": ([8, 16], [2, 4]), "rounds": (8, 2), "warmup": (2, 1),
        "steps_per_block": (None, 1), "train_steps_per_block": (5, 1), "images": (16, 4), "e2e_batch": (8, 2),
        "sampling_steps": (20, 2), "compile_models": (["sd15", "sdxl"], ["sd15"]), "compile_batch_sizes": ([1], [1]),
        "compile_backend": ("inductor", "inductor")}
    for key, (real, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else real)
    if args.tiny and args.compile_backend == "inductor" and args.device == "cpu":
        args.compile_backend = "aot_eager"
    return args


def main(argv=None) -> pd.DataFrame:
    args = parse_args(argv)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch._dynamo.config.automatic_dynamic_shapes = False  # one static graph per batch size, as a run has
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    rng = np.random.default_rng(0)
    runs = {"sampling": sampling, "end_to_end": end_to_end, "training": training}
    rows = []
    for section in args.sections:
        rows += runs[section](args.models, args, device, dtype, rng)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    df["device"], df["device_name"] = device.type, device_name(device)
    df["dtype"] = str(dtype).removeprefix("torch.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out)
    print(markdown(df))
    return df


if __name__ == "__main__":
    main()
