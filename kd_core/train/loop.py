"""The shared training loop on accelerate, reused by every study (LoRA, BK-SDM, sizes, DM-KD).

A study supplies a model (only its ``requires_grad`` parameters are trained) and a loss function
``loss_fn(indices, generator) -> {"loss": total, term: value, ...}`` over example indices. The
loop adds what a researcher expects of a long run:

- mixed precision (no / fp16 / bf16), gradient accumulation, AdamW or SGD with momentum,
  constant / linear / cosine / multi-step learning rate with warm-up, gradient clipping, seeding;
- resumable checkpoints every N optimizer steps (accelerate ``save_state``: trainable weights,
  optimizer, scheduler, RNG), written to a temporary folder and renamed when complete; at most K
  kept, and the newest complete one is never deleted before a newer one is complete;
- bit-exact resumption on CPU: the batch order and every random draw are functions of
  (seed, step), so a run resumed from a checkpoint ends with the weights of an uninterrupted run;
- early stopping on a validation metric (``monitor``, default the loss) with a patience, and/or
  the best weights restored at the end (``restore_best``); equal values of a monitored metric
  other than the loss (an accuracy that a small validation split saturates) go to the lower
  loss; ``val_fn`` keys ``test/<term>`` are
  logged under split ``test`` (tracked per evaluation, never used to choose weights);
- an optional exponential moving average of the trained weights (``ema_decay``), checkpointed with
  them; when set, the run ends with the EMA weights;
- a NaN or inf loss stops the run with a one-line error and keeps the last good checkpoint;
- ``loss.parquet``: every loss term per step, and the validation loss per evaluation; tqdm progress.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kd_core.errors import KDError
from kd_core.io import write_json, write_parquet

LOSS_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.int64()), ("split", pa.string()), ("term", pa.string()),
                         ("value", pa.float64())])
#: Bumped when what a checkpoint holds changes (2: buffers of trained modules), so older ones are not resumed.
CHECKPOINT_FORMAT = 2
LossFn = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None: epochs x steps per epoch
    batch_size: int = 4
    gradient_accumulation: int = 1
    lr: float = 1e-4
    lr_scheduler: str = "cosine"  # constant | linear | cosine | multistep
    warmup_steps: int = 0
    milestones: tuple[float, ...] = (0.5, 0.8)  # multistep: fractions of the run at which lr is multiplied by gamma
    gamma: float = 0.1
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # sgd
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
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


@dataclass
class TrainResult:
    steps: int
    stopped_early: bool
    best_step: int | None
    best_val: float | None
    resumed_from: int | None
    losses: pd.DataFrame


def _lr_lambda(kind: str, warmup: int, total: int, milestones: tuple[float, ...] = (), gamma: float = 0.1
               ) -> Callable[[int], float]:
    if kind not in ("constant", "linear", "cosine", "multistep"):
        raise KDError(f"unknown lr_scheduler {kind!r}; choose constant, linear, cosine or multistep")
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


def _accelerator(mixed_precision: str, cpu: bool) -> Accelerator:
    """accelerate keeps one state per process: a later run in the same process (a notebook, a test
    suite) with another precision gets a fresh one; the distributed set-up (PartialState) is kept."""
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


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
    """The trained parameters, and the floating-point buffers of the modules that own them (batch-norm
    running statistics): what a checkpoint, the best weights and the EMA must hold to restore a model."""
    state = {k: p.detach().clone().contiguous() for k, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            for b, buf in module.named_buffers(recurse=False):
                if buf is not None and buf.is_floating_point():
                    state[f"{name}.{b}" if name else b] = buf.detach().clone().contiguous()
    return state


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a temporary ``.step-*`` folder is an interrupted save)."""
    return sorted(p for p in ckpt_dir.glob("step-*") if (p / "trainer.json").is_file())


class Trainer:
    """One training run in ``out_dir`` (``checkpoints/``, ``loss.parquet``)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, n_examples: int, out_dir: str | Path,
                 cfg: TrainConfig, val_fn: Callable[[], dict[str, float]] | None = None, name: str = "train",
                 run_key: str = ""):
        """``run_key`` names what the run trains (data, model, settings): checkpoints of another key are discarded."""
        self.model, self.loss_fn, self.n, self.cfg, self.val_fn, self.name = model, loss_fn, n_examples, cfg, val_fn, name
        self.run_key = f"format={CHECKPOINT_FORMAT}|{run_key}|{json.dumps(asdict(cfg), sort_keys=True)}|n={n_examples}"
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        cpu = cfg.device == "cpu" or not torch.cuda.is_available()
        mixed = cfg.mixed_precision or "no"  # YAML reads a bare `no` as false
        self.accelerator = _accelerator(mixed if not cpu or mixed == "bf16" else "no", cpu)
        self.steps_per_epoch = max(1, (n_examples // max(1, min(cfg.batch_size, n_examples))) // cfg.gradient_accumulation)
        self.total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise KDError(f"{name}: the model has no trainable parameters")
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
        elif cfg.optimizer == "adamw":
            # fused: one kernel for all parameters (the default per-parameter loop is ~10% of a toy step on a CPU)
            opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        else:
            raise KDError(f"{name}: unknown optimizer {cfg.optimizer!r}; choose adamw or sgd")
        if cfg.monitor_mode not in ("min", "max"):
            raise KDError(f"{name}: monitor_mode is {cfg.monitor_mode!r}; choose min or max")
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, _lr_lambda(cfg.lr_scheduler, cfg.warmup_steps, self.total, cfg.milestones, cfg.gamma))
        self.model, self.opt, self.sched = self.accelerator.prepare(model, opt, sched)
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema_decay is not None:
            self.ema = trainable_state(self.accelerator.unwrap_model(self.model))
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)

    # accelerate saves the whole model by default; a LoRA run only needs its adapter weights.
    def _save_hook(self, models, weights, output_dir):
        if self.accelerator.is_main_process:
            save_file(trainable_state(self.accelerator.unwrap_model(self.model)),
                      str(Path(output_dir) / "trainable.safetensors"))
        weights.clear()

    def _load_hook(self, models, input_dir):
        state = load_file(str(Path(input_dir) / "trainable.safetensors"))
        self.accelerator.unwrap_model(self.model).load_state_dict(state, strict=False)
        models.clear()

    def _checkpoint(self, step: int, meta: dict, rows: list[dict]) -> None:
        """Every process saves its state (RNG) into one temporary folder; the main process completes it."""
        acc = self.accelerator
        final = self.ckpt_dir / f"step-{step:08d}"
        tmp = self.ckpt_dir / f".step-{step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if self.best is not None:
                save_file(self.best, str(tmp / "best.safetensors"))
            if self.ema is not None:
                save_file(self.ema, str(tmp / "ema.safetensors"))
            pd.DataFrame(rows, columns=LOSS_SCHEMA.names).to_parquet(tmp / "loss_rows.parquet")
            write_json(tmp / "trainer.json", meta)  # written last: marks the checkpoint complete
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in complete_checkpoints(self.ckpt_dir)[: -max(1, self.cfg.keep_checkpoints)]:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _evaluate(self, step: int, epoch: int, rows: list[dict]) -> tuple[float, float] | None:
        """(monitored value, validation loss), both to minimise: ties of the monitored value (an
        accuracy on a small validation split reaches 1.0 early and stays there) go to the lower loss."""
        if self.val_fn is None:
            return None
        self.model.eval()
        with torch.no_grad():
            terms = self.val_fn()
        self.model.train()
        rows += [{"step": step, "epoch": epoch, "split": k.split("/")[0] if "/" in k else "val", "term": k.split("/")[-1],
                  "value": float(v)} for k, v in terms.items()]
        if self.cfg.monitor not in terms:
            raise KDError(f"{self.name}: the validation returns no {self.cfg.monitor!r} to monitor; it has {sorted(terms)}")
        value = float(terms[self.cfg.monitor])
        tie = float(terms["loss"]) if "loss" in terms and self.cfg.monitor != "loss" else 0.0
        return (value if self.cfg.monitor_mode == "min" else -value), tie

    def fit(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        rows: list[dict] = []
        step, bad_evals, best_val, best_step, best_tie, resumed = 0, 0, None, None, 0.0, None
        self.best: dict[str, torch.Tensor] | None = None
        done = complete_checkpoints(self.ckpt_dir)
        if done and json.loads((done[-1] / "trainer.json").read_text()).get("run_key") != self.run_key:
            tqdm.write(f"{self.name}: checkpoints in {self.ckpt_dir} are of other settings or data; starting afresh", file=sys.stderr)
            shutil.rmtree(self.ckpt_dir)
            done = []
        if done:
            last = done[-1]
            acc.load_state(str(last))
            meta = json.loads((last / "trainer.json").read_text())
            step, bad_evals, best_val, best_step = meta["step"], meta["bad_evals"], meta["best_val"], meta["best_step"]
            best_tie = meta.get("best_tie", 0.0)
            rows = pd.read_parquet(last / "loss_rows.parquet").to_dict("records")
            if (last / "best.safetensors").is_file():
                self.best = load_file(str(last / "best.safetensors"))
            if self.ema is not None:
                self.ema = load_file(str(last / "ema.safetensors"))
            resumed = step
            tqdm.write(f"{self.name}: resuming from {last} (step {step} of {self.total})", file=sys.stderr)
            if meta.get("finished"):
                return self._finish(step, meta.get("stopped_early", False), best_step, best_val, resumed, rows)
        eval_every = cfg.eval_every or self.steps_per_epoch
        stopped = False
        self.model.train()
        bar = tqdm(total=self.total, initial=step, desc=self.name, unit="step", disable=not acc.is_main_process)
        while step < self.total and not stopped:
            terms_sum: dict[str, float] = {}
            epoch = 0
            for micro in range(cfg.gradient_accumulation):
                m = step * cfg.gradient_accumulation + micro
                idx, epoch = batch_indices(self.n, cfg.batch_size, cfg.seed, m)
                idx = idx[acc.process_index :: acc.num_processes]
                torch.manual_seed(_step_seed(cfg.seed, m, 2))  # dropout etc.: a function of the step
                gen = torch.Generator().manual_seed(_step_seed(cfg.seed, m, 3))
                with acc.autocast():
                    terms = self.loss_fn(idx, gen)
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
            if self.ema is not None:
                with torch.no_grad():
                    live = acc.unwrap_model(self.model).state_dict(keep_vars=True)
                    params = [n for n in self.ema if isinstance(live[n], torch.nn.Parameter)]
                    torch._foreach_lerp_([self.ema[n] for n in params], [live[n].detach() for n in params],
                                         1.0 - cfg.ema_decay)
                    for name, avg in self.ema.items():  # buffers (running statistics) follow the model
                        if not isinstance(live[name], torch.nn.Parameter):
                            avg.copy_(live[name])
            step += 1
            rows += [{"step": step, "epoch": epoch, "split": "train", "term": k, "value": v} for k, v in terms_sum.items()]
            rows.append({"step": step, "epoch": epoch, "split": "train", "term": "lr", "value": self.sched.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{terms_sum['loss']:.4f}")
            if self.val_fn is not None and (step % eval_every == 0 or step == self.total):
                val, tie = self._evaluate(step, epoch, rows)
                if best_val is None or (val, tie) < (best_val, best_tie):
                    best_val, best_tie, best_step, bad_evals = val, tie, step, 0
                    keep = cfg.patience is not None or cfg.restore_best
                    self.best = trainable_state(acc.unwrap_model(self.model)) if keep else None
                else:
                    bad_evals += 1
                    stopped = cfg.patience is not None and bad_evals >= cfg.patience
                    if stopped:
                        tqdm.write(f"{self.name}: early stop at step {step}: no improvement in {bad_evals} evaluations "
                                   f"(best {cfg.monitor} {self._signed(best_val):.5f} at step {best_step})", file=sys.stderr)
            finished = stopped or step >= self.total
            if step % cfg.checkpoint_every == 0 or finished:
                self._checkpoint(step, {"run_key": self.run_key, "step": step, "bad_evals": bad_evals, "best_val": best_val, "best_tie": best_tie, "best_step": best_step,
                                        "finished": finished, "stopped_early": stopped, "config": asdict(cfg)}, rows)
        bar.close()
        return self._finish(step, stopped, best_step, best_val, resumed, rows)

    def _signed(self, value: float | None) -> float | None:
        """A monitored value as the user sees it (tracked negated when larger is better)."""
        return value if value is None or self.cfg.monitor_mode == "min" else -value

    def _finish(self, step, stopped, best_step, best_val, resumed, rows) -> TrainResult:
        best_val = self._signed(best_val)
        model = self.accelerator.unwrap_model(self.model)
        if self.ema is not None:
            model.load_state_dict(self.ema, strict=False)
        elif self.best is not None:
            model.load_state_dict(self.best, strict=False)
        losses = pd.DataFrame(rows, columns=LOSS_SCHEMA.names)
        if not self.accelerator.is_main_process:
            return TrainResult(step, stopped, best_step, best_val, resumed, losses)
        write_parquet(losses, self.out_dir / "loss.parquet", LOSS_SCHEMA, f"train/{self.name}/loss",
                      {"config": asdict(self.cfg), "steps": step, "stopped_early": stopped, "best_step": best_step})
        return TrainResult(step, stopped, best_step, best_val, resumed, losses)
