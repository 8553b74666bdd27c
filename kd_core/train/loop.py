"""The shared training loop on accelerate, reused by every study (LoRA, block KD, width students,
DDPM teachers, toy pretraining, DM-KD classifiers).

A study supplies a model (only its ``requires_grad`` parameters are trained) and a loss
``loss(model, batch, generator) -> {"loss": total, term: value, ...}``. The loop hands the loss the
model it prepared (DDP-wrapped in several processes, as NVlabs/edm's training loop hands its loss
object the wrapped network), so every forward that trains goes through the wrapper and its
gradients are averaged over the processes. ``batch`` (:class:`Batch`) holds the example indices of
the whole batch and this process's share of them: a loss draws its noise, timesteps and
augmentations for the whole batch and keeps its share, so N processes train the weights one process
would over the same global batch. The loop adds what a researcher expects of a long run:

- mixed precision (no / fp16 / bf16), gradient accumulation, AdamW or SGD with momentum,
  constant / linear / cosine / multi-step / one-cycle learning rate with warm-up, gradient
  clipping, seeding;
- resumable checkpoints every N optimizer steps (accelerate ``save_state``: trainable weights,
  optimizer, scheduler, RNG), written to a temporary folder and renamed when complete; at most K
  kept, and the newest complete one is never deleted before a newer one is complete; each
  records the SHA-256 of each of its files, and resume takes the newest intact one (a damaged
  one is set aside as ``damaged-step-*`` with a warning naming the file);
- bit-exact resumption on CPU: the batch order and every random draw are functions of
  (seed, step), so a run resumed from a checkpoint ends with the weights of an uninterrupted run;
- early stopping on a validation metric (``monitor``, default the loss) with a patience, and/or
  the best weights restored at the end (``restore_best``); equal values of a monitored metric
  other than the loss (an accuracy that a small validation split saturates) go to the lower
  loss; ``val_fn(model)`` keys ``test/<term>`` are logged under split ``test`` (tracked per
  evaluation, never used to choose weights);
- an optional exponential moving average of the trained weights (``ema_decay``), checkpointed with
  them; when set, the run ends with the EMA weights;
- losses with state (a target network, :class:`kd_core.train.targets.EMATarget`): a loss object
  with ``after_step(model, step)`` is called after every optimizer step (after the EMA); if it also
  has ``state_dict()`` / ``load_state_dict()``, its state is saved in every checkpoint
  (``loss_state.safetensors``) and restored on resume, so a resumed run ends as an uninterrupted one;
- a NaN or inf loss stops the run with a one-line error and keeps the last good checkpoint;
- ``loss.parquet``: every loss term per step, and the validation loss per evaluation; tqdm progress.

The helpers every study shares live here too: :func:`holdout_split` (the seeded validation
split), :func:`run_key` (what a run trains, so that checkpoints of other settings are not resumed),
:func:`chunked_mean` (a validation loss over fixed draws) and :func:`steps_per_epoch`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.fast_paths import TrainFastPaths, apply_to_training, fused_adamw
from kd_core.io import write_json, write_parquet
from kd_core.seeding import resolve_dtype

LOSS_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.int64()), ("split", pa.string()), ("term", pa.string()),
                         ("value", pa.float64())])
#: Bumped when what a checkpoint holds changes (2: buffers of trained modules, 3: file checksums, 4: integer
#: buffers too: batch norm's num_batches_tracked), so older
#: ones are not resumed.
CHECKPOINT_FORMAT = 4
#: Seed offset of the fixed draws of a validation loss (noise, timesteps), apart from any training step's.
VAL_SEED = 12_345
LR_SCHEDULERS = ("constant", "linear", "cosine", "multistep", "onecycle")


@dataclass(frozen=True)
class Batch:
    """One micro-batch: ``indices`` of the whole batch (every process's examples) and this process's share.

    A loss draws its random numbers for all of ``indices`` and keeps :meth:`shard` of them, so that
    the draws of an example do not depend on the number of processes.
    """

    indices: torch.Tensor
    rank: int = 0
    world: int = 1

    def shard(self, x):
        """This process's rows of ``x`` (a tensor or list with one row per example of the batch)."""
        return x[self.rank :: self.world]

    @property
    def local(self) -> torch.Tensor:
        return self.shard(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


LossFn = Callable[[torch.nn.Module, Batch, torch.Generator], dict[str, torch.Tensor]]
ValFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None: epochs x steps per epoch
    batch_size: int = 4
    gradient_accumulation: int = 1
    lr: float = 1e-4
    lr_scheduler: str = "cosine"  # constant | linear | cosine | multistep | onecycle
    warmup_steps: int = 0
    milestones: tuple[float, ...] = (0.5, 0.8)  # multistep: fractions of the run at which lr is multiplied by gamma
    gamma: float = 0.1
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # sgd
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16 | auto (bf16 / fp16 on a GPU, none on a CPU)
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int | None = None  # optimizer steps; None: once per epoch
    patience: int | None = None  # evaluations without improvement before stopping; None: never
    monitor: str = "loss"  # the val_fn key that decides "improvement"
    monitor_mode: str = "min"  # min | max
    restore_best: bool = False  # end with the best-monitored weights even without early stopping
    device: str = "auto"
    ema_decay: float | None = None  # EMA of the trained weights, used at the end; None: off
    ema_warmup: bool = False  # decay min(ema_decay, (1 + n) / (10 + n)) at update n, as diffusers' EMAModel
    fast_paths: TrainFastPaths = field(default_factory=TrainFastPaths)


@dataclass
class TrainResult:
    steps: int
    stopped_early: bool
    best_step: int | None
    best_val: float | None
    resumed_from: int | None
    losses: pd.DataFrame


def steps_per_epoch(n_examples: int, batch_size: int, gradient_accumulation: int = 1) -> int:
    """Optimizer steps in one pass over ``n_examples`` (drop-last, at least one)."""
    return max(1, (n_examples // max(1, min(batch_size, n_examples))) // gradient_accumulation)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, training) indices of ``n`` examples: a seeded ``fraction`` held out, at least one
    and never all (none when ``fraction`` is 0 or there is one example)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n > 1 else 0
    return order[:n_val], order[n_val:]


def run_key(**parts) -> str:
    """16 hex digits of SHA-256 over ``parts`` (JSON): what a run trains; checkpoints of another key are discarded."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def chunked_mean(terms: Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]], ids: torch.Tensor,
                 seed: int, chunk: int = 16) -> dict[str, float]:
    """The mean over examples of ``terms(ids[chunk], generator)`` (each a mean over its chunk), each
    chunk's draws seeded by ``seed + offset`` so that every evaluation sees the same noise."""
    sums: dict[str, float] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        for k, v in terms(part, torch.Generator().manual_seed(seed + i)).items():
            sums[k] = sums.get(k, 0.0) + float(v) * (len(part) / len(ids))
    return sums


def _lr_lambda(kind: str, warmup: int, total: int, milestones: tuple[float, ...] = (), gamma: float = 0.1
               ) -> Callable[[int], float]:
    if kind not in LR_SCHEDULERS:
        raise KDError(f"unknown lr_scheduler {kind!r}; choose {', '.join(LR_SCHEDULERS[:-1])} or {LR_SCHEDULERS[-1]}")
    bounds = [round(m * total) for m in milestones]

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "multistep":
            return gamma ** sum(step >= b for b in bounds)
        frac = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1 - frac) if kind == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.lr_scheduler == "onecycle":  # Smith & Topin 2019: warm-up share from warmup_steps (default 10%)
        pct = cfg.warmup_steps / total if cfg.warmup_steps else 0.1
        return torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=total, pct_start=pct)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(cfg.lr_scheduler, cfg.warmup_steps, total, cfg.milestones, cfg.gamma))


def training_precision(mixed_precision: str | bool | None, cpu: bool) -> str:
    """The mixed precision a run trains in: ``no``, ``fp16`` or ``bf16`` (YAML reads a bare ``no`` as
    false). ``auto``: bf16 on a GPU that has it, fp16 on one that has not, none on a CPU. fp16
    autocast on a CPU is not offered by accelerate, so a CPU run of an fp16 config trains in fp32."""
    mixed = mixed_precision or "no"
    if mixed == "auto":  # generation's dtype: auto, as a training precision
        auto = resolve_dtype("auto", torch.device("cpu" if cpu or not torch.cuda.is_available() else "cuda"))
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(auto, "no")
    return mixed if not cpu or mixed == "bf16" else "no"


def run_precision(cfg: TrainConfig) -> str:
    """The precision the Trainer trains ``cfg``'s run in (on a CPU unless CUDA is there and asked for):
    what a study casts its frozen weights by (:func:`weight_dtype`) before it builds the Trainer."""
    return training_precision(cfg.mixed_precision, cfg.device == "cpu" or not torch.cuda.is_available())


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype of a run's *frozen* weights (the diffusers training scripts' ``weight_dtype``): the
    training precision under fp16 / bf16 autocast, fp32 otherwise; trainable weights stay fp32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def _accelerator(mixed_precision: str, cpu: bool) -> Accelerator:
    """accelerate keeps one state per process: a later run in the same process (a notebook, a test
    suite) with another precision gets a fresh one; the distributed set-up (PartialState) is kept.

    ``split_batches``: a batch is the global batch, shared by the processes. Without it accelerate
    takes each process's batch for a whole one and steps the learning-rate schedule once per
    process per optimizer step: in N processes the warm-up, the cosine and the milestones came N
    times too early."""
    kw = {"mixed_precision": mixed_precision, "cpu": cpu,
          "dataloader_config": DataLoaderConfiguration(split_batches=True)}
    try:
        return Accelerator(**kw)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(**kw)


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + step * 7_919 + salt * 104_729) % (2**63 - 1)


def batch_indices(n: int, batch_size: int, seed: int, micro_step: int) -> tuple[torch.Tensor, int]:
    """Example indices of a micro-batch and its epoch: a seeded permutation per epoch, drop-last."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(seed, epoch, 1)))
    size = min(batch_size, n)
    return perm[k * size : (k + 1) * size], epoch


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters, and the buffers of the modules that own them (batch norm's running
    statistics and its ``num_batches_tracked`` count): what a checkpoint, the best weights and the EMA
    must hold to restore a model."""
    state = {k: p.detach().clone().contiguous() for k, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            for b, buf in module.named_buffers(recurse=False):
                if buf is not None:
                    state[f"{name}.{b}" if name else b] = buf.detach().clone().contiguous()
    return state


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a temporary ``.step-*`` folder is an interrupted save)."""
    return sorted(p for p in ckpt_dir.glob("step-*") if (p / "trainer.json").is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by path relative to it."""
    return {str(f.relative_to(folder)): _sha256(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def checkpoint_meta(ckpt: Path) -> tuple[dict | None, str | None]:
    """A finished checkpoint's ``trainer.json`` once every file it lists matches its checksum, or
    ``(None, what is wrong)``: a file missing, changed since it was written, or trainer.json unreadable."""
    try:
        meta = json.loads((ckpt / "trainer.json").read_text())
        files = meta["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return None, "trainer.json is unreadable or incomplete"
    for name, digest in files.items():
        path = ckpt / name
        if not path.is_file():
            return None, f"{name} is missing"
        if _sha256(path) != digest:
            return None, f"{name} does not match its checksum"
    return meta, None


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint's ``trainer.json`` and ``loss_rows.parquet`` restore."""

    step: int = 0
    bad_evals: int = 0
    best_val: float | None = None  # the monitored value, negated when larger is better
    best_tie: float = 0.0
    best_step: int | None = None
    stopped: bool = False
    finished: bool = False
    resumed: int | None = None
    rows: list[dict] = field(default_factory=list)

    def meta(self, run_key: str, cfg: TrainConfig) -> dict:
        return {"run_key": run_key, "step": self.step, "bad_evals": self.bad_evals, "best_val": self.best_val,
                "best_tie": self.best_tie, "best_step": self.best_step, "finished": self.finished,
                "stopped_early": self.stopped, "config": asdict(cfg)}


class Trainer:
    """One training run in ``out_dir`` (``checkpoints/``, ``loss.parquet``)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, n_examples: int, out_dir: str | Path,
                 cfg: TrainConfig, val_fn: ValFn | None = None, name: str = "train", run_key: str = ""):
        """``run_key`` names what the run trains (data, model, settings): checkpoints of another key are discarded."""
        self.loss_fn, self.n, self.cfg, self.val_fn, self.name = loss_fn, n_examples, cfg, val_fn, name
        self.run_key = f"format={CHECKPOINT_FORMAT}|{run_key}|{json.dumps(asdict(cfg), sort_keys=True)}|n={n_examples}"
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        for folder in (self.out_dir, self.ckpt_dir):
            if folder.exists() and not folder.is_dir():
                what = "checkpoints folder" if folder == self.ckpt_dir else "run folder"
                raise KDError(f"{folder} is a file, where the training run needs its {what}; move or delete it")
        cpu = cfg.device == "cpu" or not torch.cuda.is_available()
        self.accelerator = _accelerator(run_precision(cfg), cpu)
        self.steps_per_epoch = steps_per_epoch(n_examples, cfg.batch_size, cfg.gradient_accumulation)
        self.total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        apply_to_training(model, cfg.fast_paths)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise KDError(f"{name}: the model has no trainable parameters")
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
        elif cfg.optimizer == "adamw":
            # fused: one kernel for all parameters (the default per-parameter loop is ~10% of a toy step on a CPU)
            fused = fused_adamw(cfg.fast_paths.fused_optimizer, self.accelerator.device)
            opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
        else:
            raise KDError(f"{name}: unknown optimizer {cfg.optimizer!r}; choose adamw or sgd")
        if cfg.monitor_mode not in ("min", "max"):
            raise KDError(f"{name}: monitor_mode is {cfg.monitor_mode!r}; choose min or max")
        self.model, self.opt, self.sched = self.accelerator.prepare(model, opt, _scheduler(opt, cfg, self.total))
        self.ema: dict[str, torch.Tensor] | None = None
        self._ema_pairs = None
        if cfg.ema_decay is not None:
            self.ema = trainable_state(self.unwrapped)
        self.best: dict[str, torch.Tensor] | None = None
        # a loss with state declares after_step; its state_dict travels with the checkpoints (a loss that
        # merely holds modules, such as a frozen teacher, keeps nothing there)
        self._loss_state = hasattr(loss_fn, "after_step") and hasattr(loss_fn, "state_dict")
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The trained model itself (without the DDP wrapper of several processes)."""
        return self.accelerator.unwrap_model(self.model)

    # accelerate saves the whole model by default; a LoRA run only needs its adapter weights.
    def _save_hook(self, models, weights, output_dir):
        if self.accelerator.is_main_process:
            save_file(trainable_state(self.unwrapped), str(Path(output_dir) / "trainable.safetensors"))
        weights.clear()

    def _load_hook(self, models, input_dir):
        state = load_file(str(Path(input_dir) / "trainable.safetensors"))
        self.unwrapped.load_state_dict(state, strict=False)
        models.clear()

    def fit(self) -> TrainResult:
        """Resume, then steps (each: loss and backward per micro-batch, optimizer, EMA, log) with
        evaluations and checkpoints on their schedules, then the chosen weights and ``loss.parquet``."""
        run = self._resume()
        if run.finished:
            return self._finish(run)
        eval_every = self.cfg.eval_every or self.steps_per_epoch
        self.model.train()
        bar = tqdm(total=self.total, initial=run.step, desc=self.name, unit="step",
                   disable=not self.accelerator.is_main_process)
        while run.step < self.total and not run.stopped:
            terms, epoch = self._step(run.step)
            self._update_ema(run.step)
            if hasattr(self.loss_fn, "after_step"):  # a loss with state: its target follows the new weights
                self.loss_fn.after_step(self.unwrapped, run.step)
            run.step += 1
            run.rows += [{"step": run.step, "epoch": epoch, "split": "train", "term": k, "value": v} for k, v in terms.items()]
            run.rows.append({"step": run.step, "epoch": epoch, "split": "train", "term": "lr",
                             "value": self.sched.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
            if self.val_fn is not None and (run.step % eval_every == 0 or run.step == self.total):
                self._evaluate(run, epoch)
            run.finished = run.stopped or run.step >= self.total
            if run.step % self.cfg.checkpoint_every == 0 or run.finished:
                self._checkpoint(run)
        bar.close()
        return self._finish(run)

    def _resume(self) -> _Progress:
        """The newest intact checkpoint of this run key, loaded (optimizer, RNG, best and EMA weights), or a fresh start."""
        last, meta = self._intact_checkpoint()
        if last is None:
            return _Progress()
        self.accelerator.load_state(str(last))
        run = _Progress(step=meta["step"], bad_evals=meta["bad_evals"], best_val=meta["best_val"],
                        best_tie=meta.get("best_tie", 0.0), best_step=meta["best_step"],
                        stopped=meta.get("stopped_early", False), finished=bool(meta.get("finished")),
                        resumed=meta["step"], rows=pd.read_parquet(last / "loss_rows.parquet").to_dict("records"))
        if (last / "best.safetensors").is_file():
            self.best = load_file(str(last / "best.safetensors"))
        if self.ema is not None:
            self.ema = load_file(str(last / "ema.safetensors"))
            self._ema_pairs = None
        if self._loss_state:
            state = last / "loss_state.safetensors"
            if not state.is_file():
                raise KDError(f"{self.name}: checkpoint {last} lacks loss_state.safetensors, the state of this run's "
                              f"loss; delete {self.ckpt_dir} to train afresh")
            self.loss_fn.load_state_dict(load_file(str(state)))  # on the CPU: load_state_dict copies to the devices
        tqdm.write(f"{self.name}: resuming from {last} (step {run.step} of {self.total})", file=sys.stderr)
        return run

    def _intact_checkpoint(self) -> tuple[Path | None, dict | None]:
        """Newest first: a damaged checkpoint is set aside (renamed ``damaged-step-*``, warning naming the
        file); the first intact one of this run key is the answer; one of another key discards them all."""
        done = complete_checkpoints(self.ckpt_dir)
        self.accelerator.wait_for_everyone()  # every process has listed them before the main one renames any
        damaged = False
        for ckpt in reversed(done):
            meta, problem = checkpoint_meta(ckpt)
            if meta is None:
                tqdm.write(f"{self.name}: checkpoint {ckpt} is damaged ({problem}); trying the previous one", file=sys.stderr)
                damaged = True
                if self.accelerator.is_main_process:
                    shutil.rmtree(ckpt.with_name(f"damaged-{ckpt.name}"), ignore_errors=True)
                    ckpt.rename(ckpt.with_name(f"damaged-{ckpt.name}"))
                continue
            if meta.get("run_key") == self.run_key:
                return ckpt, meta
            tqdm.write(f"{self.name}: checkpoints in {self.ckpt_dir} are of other settings or data; starting afresh",
                       file=sys.stderr)
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                shutil.rmtree(self.ckpt_dir)
            return None, None
        if damaged:
            tqdm.write(f"{self.name}: no intact checkpoint in {self.ckpt_dir}; starting afresh", file=sys.stderr)
        return None, None

    def _step(self, step: int) -> tuple[dict[str, float], int]:
        """One optimizer step over ``gradient_accumulation`` micro-batches; the loss terms (mean over
        micro-batches and processes) and the epoch."""
        cfg, acc = self.cfg, self.accelerator
        terms_sum: dict[str, float] = {}
        epoch = 0
        for micro in range(cfg.gradient_accumulation):
            m = step * cfg.gradient_accumulation + micro
            idx, epoch = batch_indices(self.n, cfg.batch_size, cfg.seed, m)
            # dropout etc.: a function of the step (and of the process: ranks draw independent masks)
            torch.manual_seed(_step_seed(cfg.seed, m, 2) + acc.process_index)
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, m, 3))
            with acc.autocast():
                terms = self.loss_fn(self.model, Batch(idx, acc.process_index, acc.num_processes), gen)
            loss = terms["loss"]
            if not torch.isfinite(loss).all():
                last = complete_checkpoints(self.ckpt_dir)
                keep = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
                raise KDError(f"{self.name}: the loss became {loss.item()} at step {step}; {keep}. "
                              "Lower the learning rate or enable gradient clipping, then rerun")
            acc.backward(loss / cfg.gradient_accumulation)
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach()) / cfg.gradient_accumulation
        if acc.num_processes > 1:  # log the mean over processes (each saw its shard of the batch)
            mean = acc.reduce(torch.tensor(list(terms_sum.values()), device=acc.device), reduction="mean")
            terms_sum = dict(zip(terms_sum, mean.tolist(), strict=True))
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return terms_sum, epoch

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        if self.ema is None:
            return
        decay = min(self.cfg.ema_decay, (1 + step) / (10 + step)) if self.cfg.ema_warmup else self.cfg.ema_decay
        if self._ema_pairs is None:  # (average, live tensor) of parameters and of buffers, looked up once
            live = self.unwrapped.state_dict(keep_vars=True)
            self._ema_pairs = tuple([(self.ema[n], live[n].detach()) for n in self.ema if isinstance(live[n], torch.nn.Parameter) == is_param]
                                    for is_param in (True, False))
        params, buffers = self._ema_pairs
        if params:
            torch._foreach_lerp_([a for a, _ in params], [v for _, v in params], 1.0 - decay)
        for avg, value in buffers:  # buffers (running statistics) follow the model
            avg.copy_(value)

    def _evaluate(self, run: _Progress, epoch: int) -> None:
        """Validation terms into the log; the best weights kept, early stopping decided. Ties of the
        monitored value (an accuracy on a small validation split reaches 1.0 early and stays there)
        go to the lower validation loss."""
        cfg = self.cfg
        self.model.eval()
        with torch.no_grad(), self.accelerator.autocast():  # in the precision it trains in
            terms = self.val_fn(self.unwrapped)
        self.model.train()
        run.rows += [{"step": run.step, "epoch": epoch, "split": k.split("/")[0] if "/" in k else "val",
                      "term": k.split("/")[-1], "value": float(v)} for k, v in terms.items()]
        if cfg.monitor not in terms:
            raise KDError(f"{self.name}: the validation returns no {cfg.monitor!r} to monitor; it has {sorted(terms)}")
        value = float(terms[cfg.monitor])
        val = value if cfg.monitor_mode == "min" else -value
        tie = float(terms["loss"]) if "loss" in terms and cfg.monitor != "loss" else 0.0
        if run.best_val is None or (val, tie) < (run.best_val, run.best_tie):
            run.best_val, run.best_tie, run.best_step, run.bad_evals = val, tie, run.step, 0
            keep = cfg.patience is not None or cfg.restore_best
            self.best = trainable_state(self.unwrapped) if keep else None
            return
        run.bad_evals += 1
        run.stopped = cfg.patience is not None and run.bad_evals >= cfg.patience
        if run.stopped:
            tqdm.write(f"{self.name}: early stop at step {run.step}: no improvement in {run.bad_evals} evaluations "
                       f"(best {cfg.monitor} {self._signed(run.best_val):.5f} at step {run.best_step})", file=sys.stderr)

    def _checkpoint(self, run: _Progress) -> None:
        """Every process saves its state (RNG) into one temporary folder; the main process completes it."""
        acc = self.accelerator
        final = self.ckpt_dir / f"step-{run.step:08d}"
        tmp = self.ckpt_dir / f".step-{run.step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if acc.is_main_process:
                if self.best is not None:
                    save_file(self.best, str(tmp / "best.safetensors"))
                if self.ema is not None:
                    save_file(self.ema, str(tmp / "ema.safetensors"))
                if self._loss_state:
                    save_file(self.loss_fn.state_dict(), str(tmp / "loss_state.safetensors"))
                pd.DataFrame(run.rows, columns=LOSS_SCHEMA.names).to_parquet(tmp / "loss_rows.parquet")
                # written last, with every other file's checksum: marks the checkpoint complete
                write_json(tmp / "trainer.json", {**run.meta(self.run_key, self.cfg), "files": file_checksums(tmp)})
        except BaseException:  # a failed write (disk full) or an interrupt: no half-written checkpoint stays
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in complete_checkpoints(self.ckpt_dir)[: -max(1, self.cfg.keep_checkpoints)]:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _signed(self, value: float | None) -> float | None:
        """A monitored value as the user sees it (tracked negated when larger is better)."""
        return value if value is None or self.cfg.monitor_mode == "min" else -value

    def _finish(self, run: _Progress) -> TrainResult:
        """The run's final weights (EMA, else the best, else the last) into the model; ``loss.parquet``."""
        if self.ema is not None:
            self.unwrapped.load_state_dict(self.ema, strict=False)
        elif self.best is not None:
            self.unwrapped.load_state_dict(self.best, strict=False)
        losses = pd.DataFrame(run.rows, columns=LOSS_SCHEMA.names)
        result = TrainResult(run.step, run.stopped, run.best_step, self._signed(run.best_val), run.resumed, losses)
        if self.accelerator.is_main_process:
            write_parquet(losses, self.out_dir / "loss.parquet", LOSS_SCHEMA, f"train/{self.name}/loss",
                          {"config": asdict(self.cfg), "steps": run.step, "stopped_early": run.stopped,
                           "best_step": run.best_step})
        return result
