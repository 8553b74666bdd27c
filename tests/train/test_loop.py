import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kd_core.errors import KDError
from kd_core.train.loop import TrainConfig, Trainer, _lr_lambda, batch_indices, complete_checkpoints

from ..conftest import damage

X = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
Y = X @ torch.linspace(-1, 1, 8) + 1.0


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))


def loss_fn_for(model, nan_at=None, stop_at=None):
    calls = {"n": 0}

    def loss_fn(model, batch, gen):
        idx = batch.local
        calls["n"] += 1
        if stop_at is not None and calls["n"] == stop_at:
            raise KeyboardInterrupt
        noise = 0.01 * torch.randn(len(idx), generator=gen)
        task = ((model(X[idx]).squeeze(-1) - Y[idx] - noise) ** 2).mean()
        if nan_at is not None and calls["n"] >= nan_at:
            task = task * float("nan")
        return {"loss": task, "task_mse": task}

    return loss_fn


CFG = TrainConfig(max_steps=12, batch_size=8, lr=3e-2, lr_scheduler="cosine", warmup_steps=2, checkpoint_every=3,
                  keep_checkpoints=2, seed=5, device="cpu")


def final_weights(tmp_path, cfg=CFG, **kw):
    model = make_model()
    result = Trainer(model, loss_fn_for(model, **kw), len(X), tmp_path, cfg).fit()
    return model, result


def test_loss_falls_and_every_term_is_logged(tmp_path):
    model, result = final_weights(tmp_path, TrainConfig(**{**CFG.__dict__, "max_steps": 60}))
    loss = pd.read_parquet(tmp_path / "loss.parquet")
    train = loss[(loss["split"] == "train") & (loss["term"] == "loss")]
    assert len(train) == 60 and train["value"].iloc[-5:].mean() < 0.3 * train["value"].iloc[:5].mean()
    assert {"loss", "task_mse", "lr"} <= set(loss["term"])
    assert result.steps == 60 and result.resumed_from is None
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["step-00000057", "step-00000060"]


def test_resume_after_interruption_is_bit_exact(tmp_path):
    reference, _ = final_weights(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        final_weights(tmp_path / "run", stop_at=8)  # dies during step 8, after the step-6 checkpoint
    assert complete_checkpoints(tmp_path / "run" / "checkpoints")[-1].name == "step-00000006"
    resumed, result = final_weights(tmp_path / "run")
    assert result.resumed_from == 6
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    ref_loss = pd.read_parquet(tmp_path / "ref" / "loss.parquet")
    pd.testing.assert_frame_equal(ref_loss, pd.read_parquet(tmp_path / "run" / "loss.parquet"))


def test_resume_restores_every_buffer_of_batch_norm(tmp_path):
    """Running statistics and the integer num_batches_tracked come back with the weights (the SIGKILL
    test of the DM-KD classifiers found num_batches_tracked reset to 0 after a resume)."""
    def bn_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))

    def fit(out, stop_at=None):
        model, calls = bn_model(), {"n": 0}

        def loss(m, batch, gen):
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            return {"loss": ((m(X[batch.local]).squeeze(-1) - Y[batch.local]) ** 2).mean()}

        Trainer(model, loss, len(X), out, CFG).fit()
        return model.state_dict()

    reference = fit(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "run", stop_at=8)
    resumed = fit(tmp_path / "run")
    assert int(resumed["1.num_batches_tracked"]) == CFG.max_steps
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k


@pytest.mark.parametrize("kind", ["flipped", "truncated", "empty", "deleted"])
def test_a_damaged_checkpoint_gives_way_to_the_previous_one(tmp_path, kind, capsys):
    reference, _ = final_weights(tmp_path / "ref")
    ref_loss = pd.read_parquet(tmp_path / "ref" / "loss.parquet")
    with pytest.raises(KeyboardInterrupt):
        final_weights(tmp_path / "run", stop_at=11)  # dies during step 11: checkpoints step-6 and step-9 kept
    newest = complete_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    files = sorted(f.name for f in newest.iterdir())
    assert newest.name == "step-00000009" and {"trainable.safetensors", "optimizer.bin", "trainer.json",
                                               "loss_rows.parquet"} <= set(files)
    for name in files:  # each file of the newest checkpoint in turn
        work = tmp_path / f"run-{name}"
        shutil.copytree(tmp_path / "run", work)
        damage(work / "checkpoints" / newest.name / name, kind)
        capsys.readouterr()
        resumed, result = final_weights(work)
        assert result.resumed_from == 6, name
        assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), resumed.parameters(), strict=True)), name
        pd.testing.assert_frame_equal(ref_loss, pd.read_parquet(work / "loss.parquet"))
        if not (name == "trainer.json" and kind == "deleted"):  # without trainer.json the save never completed
            assert f"checkpoint {work / 'checkpoints' / newest.name} is damaged" in capsys.readouterr().err, name
            assert (work / "checkpoints" / f"damaged-{newest.name}").is_dir()


def test_with_every_checkpoint_damaged_the_run_starts_afresh(tmp_path, capsys):
    reference, _ = final_weights(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        final_weights(tmp_path / "run", stop_at=11)
    for ckpt in complete_checkpoints(tmp_path / "run" / "checkpoints"):
        damage(ckpt / "optimizer.bin", "flipped")
    resumed, result = final_weights(tmp_path / "run")
    assert result.resumed_from is None and "no intact checkpoint" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), resumed.parameters(), strict=True))


def test_a_finished_run_is_not_trained_again(tmp_path):
    first, _ = final_weights(tmp_path)
    again, result = final_weights(tmp_path)
    assert result.resumed_from == 12 and all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True))


def test_checkpoints_of_other_settings_are_discarded(tmp_path):
    final_weights(tmp_path)
    model, result = final_weights(tmp_path, TrainConfig(**{**CFG.__dict__, "lr": 1e-2}))
    assert result.resumed_from is None and result.steps == 12


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(KDError) as info:
        final_weights(tmp_path, nan_at=11)
    msg = str(info.value)
    assert "loss became nan at step 10" in msg and "step-00000009" in msg and "\n" not in msg
    assert complete_checkpoints(tmp_path / "checkpoints")[-1].name == "step-00000009"
    assert not (tmp_path / "loss.parquet").exists()


def test_early_stopping_restores_the_best_weights(tmp_path):
    model = make_model()
    vals = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    snapshots = []

    def val_fn(model):
        snapshots.append([p.detach().clone() for p in model.parameters()])
        return {"loss": next(vals)}

    cfg = TrainConfig(**{**CFG.__dict__, "max_steps": 100, "eval_every": 2, "patience": 3})
    result = Trainer(model, loss_fn_for(model), len(X), tmp_path, cfg, val_fn=val_fn).fit()
    assert result.stopped_early and result.steps == 10 and result.best_step == 4 and result.best_val == 0.5
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), snapshots[1], strict=True))
    val = pd.read_parquet(tmp_path / "loss.parquet").query("split == 'val'")
    assert list(val["step"]) == [2, 4, 6, 8, 10]


def test_monitor_max_restore_best_and_test_terms(tmp_path):
    """A larger-is-better monitor (accuracy) keeps the best weights without early stopping; test/ terms are logged."""
    model = make_model()
    accs = iter([0.6, 0.9, 0.7, 0.8])
    snapshots = []

    def val_fn(model):
        snapshots.append([p.detach().clone() for p in model.parameters()])
        return {"loss": 1.0, "accuracy": next(accs), "test/accuracy": 0.5}

    cfg = TrainConfig(**{**CFG.__dict__, "eval_every": 3, "monitor": "accuracy", "monitor_mode": "max",
                         "restore_best": True, "optimizer": "sgd", "lr": 1e-2})
    result = Trainer(model, loss_fn_for(model), len(X), tmp_path, cfg, val_fn=val_fn).fit()
    assert result.steps == 12 and not result.stopped_early and result.best_step == 6 and result.best_val == 0.9
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), snapshots[1], strict=True))
    loss = pd.read_parquet(tmp_path / "loss.parquet")
    assert list(loss.query("split == 'test'")["term"]) == ["accuracy"] * 4
    assert set(loss.query("split == 'val'")["term"]) == {"loss", "accuracy"}
    with pytest.raises(KDError, match="no 'top5' to monitor"):
        Trainer(make_model(), loss_fn_for(model), len(X), tmp_path / "b", TrainConfig(**{**cfg.__dict__, "monitor": "top5"}),
                val_fn=lambda m: {"loss": 1.0}).fit()


def test_sgd_with_multistep_decay():
    model = make_model()
    cfg = TrainConfig(**{**CFG.__dict__, "optimizer": "sgd", "momentum": 0.9, "lr_scheduler": "multistep",
                         "milestones": (0.5, 0.75), "gamma": 0.1, "warmup_steps": 0})
    trainer = Trainer(model, loss_fn_for(model), len(X), "/nonexistent", cfg)
    assert isinstance(trainer.opt.optimizer, torch.optim.SGD) and trainer.opt.param_groups[0]["momentum"] == 0.9
    f = _lr_lambda("multistep", 0, 100, (0.5, 0.8), 0.1)
    assert [f(0), f(49), f(50), f(79), f(80), f(99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(KDError, match="unknown optimizer 'lion'"):
        Trainer(make_model(), loss_fn_for(model), len(X), "/nonexistent", TrainConfig(**{**cfg.__dict__, "optimizer": "lion"}))


def test_schedules_and_batches():
    cos = _lr_lambda("cosine", 2, 12)
    assert cos(0) == 0.5 and cos(1) == 1.0 and cos(11) < 0.05
    assert _lr_lambda("linear", 0, 10)(5) == 0.5 and _lr_lambda("constant", 0, 10)(9) == 1.0
    with pytest.raises(KDError, match="unknown lr_scheduler 'step'"):
        _lr_lambda("step", 0, 10)
    seen = torch.cat([batch_indices(64, 8, 0, m)[0] for m in range(8)])
    assert sorted(seen.tolist()) == list(range(64))  # one epoch visits every example once
    assert batch_indices(64, 8, 0, 8)[1] == 1


SCRIPT = textwrap.dedent("""
    import os, sys, time, torch
    sys.path.insert(0, os.path.dirname({tests!r}))
    from tests.train.test_loop import make_model, loss_fn_for, X, CFG
    from kd_core.train.loop import Trainer, TrainConfig
    model = make_model()
    base = loss_fn_for(model)
    calls = [0]
    def blocking(m, batch, gen):
        calls[0] += 1
        if sys.argv[2] == "block" and calls[0] == 5:  # step 5: the step-3 checkpoint is complete
            print("in step 5", flush=True)
            time.sleep(3600)  # until killed
        return base(m, batch, gen)
    Trainer(model, blocking, len(X), sys.argv[1], CFG).fit()
    torch.save([p.detach() for p in model.parameters()], sys.argv[1] + "/final.pt")
""")


def test_sigkill_mid_run_then_rerun_resumes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(os.path.dirname(__file__))))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), "block"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline() == "in step 5\n"  # waits for the event, not for a time
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in complete_checkpoints(run_dir / "checkpoints")] == ["step-00000003"]
    assert not (run_dir / "final.pt").exists()
    rerun = subprocess.run([sys.executable, str(script), str(run_dir), "run"], check=True, stderr=subprocess.PIPE, text=True)
    assert f"resuming from {run_dir / 'checkpoints' / 'step-00000003'} (step 3 of 12)" in rerun.stderr
    loss = pd.read_parquet(run_dir / "loss.parquet")
    assert list(loss.query("term == 'loss'")["step"]) == list(range(1, 13))  # steps 1-3 from the checkpoint, 4-12 rerun
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref"), "run"], check=True, stderr=subprocess.DEVNULL)
    for a, b in zip(torch.load(run_dir / "final.pt", weights_only=True),
                    torch.load(tmp_path / "ref" / "final.pt", weights_only=True), strict=True):
        assert torch.equal(a, b)


def _linear_run(tmp_path, **overrides):
    """One or more SGD steps of a linear model on a noise-free MSE (no dropout, no momentum, constant lr)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    w0 = [p.detach().clone() for p in model.parameters()]
    seen = []

    def loss_fn(model, batch, gen):
        idx = batch.local
        seen.append(idx.clone())
        out = model(X[idx]).squeeze(-1)
        if torch.is_autocast_enabled("cpu"):
            seen.append(torch.get_autocast_dtype("cpu"))
        task = ((out.float() - Y[idx]) ** 2).mean()
        return {"loss": task, "task_mse": task}

    cfg = TrainConfig(**{**CFG.__dict__, "max_steps": 1, "batch_size": 4, "lr": 0.1, "optimizer": "sgd", "momentum": 0.0,
                         "weight_decay": 0.0, "lr_scheduler": "constant", "warmup_steps": 0, "max_grad_norm": None,
                         **overrides})
    result = Trainer(model, loss_fn, len(X), tmp_path, cfg).fit()
    return model, w0, seen, result


def _grad(w0, idx):
    model = torch.nn.Linear(8, 1)
    with torch.no_grad():
        for p, v in zip(model.parameters(), w0, strict=True):
            p.copy_(v)
    ((model(X[idx]).squeeze(-1) - Y[idx]) ** 2).mean().backward()
    return [p.grad for p in model.parameters()]


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    model, w0, seen, _ = _linear_run(tmp_path, gradient_accumulation=3)
    micro = [i for i in seen if isinstance(i, torch.Tensor)]
    assert [m.tolist() for m in micro] == [batch_indices(64, 4, CFG.seed, k)[0].tolist() for k in range(3)]
    grads = [_grad(w0, idx) for idx in micro]
    for p, p0, *g in zip(model.parameters(), w0, *grads, strict=True):
        assert torch.allclose(p, p0 - 0.1 * (g[0] + g[1] + g[2]) / 3, atol=1e-6)  # one step on the mean gradient
    trainer = Trainer(torch.nn.Linear(8, 1), lambda m, b, g: {}, 64, tmp_path / "x", TrainConfig(batch_size=4, gradient_accumulation=3))
    assert trainer.steps_per_epoch == 64 // 4 // 3


def test_gradient_clipping_bounds_the_update(tmp_path):
    clipped, w0, seen, _ = _linear_run(tmp_path / "c", max_grad_norm=1e-3)
    free, _, _, _ = _linear_run(tmp_path / "f")
    step = torch.cat([(p - p0).flatten() for p, p0 in zip(clipped.parameters(), w0, strict=True)])
    assert step.norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-4)  # lr x the clipped gradient norm
    full = torch.cat([(p - p0).flatten() for p, p0 in zip(free.parameters(), w0, strict=True)])
    assert full.norm().item() > 100 * step.norm().item()


def test_bf16_mixed_precision_on_cpu(tmp_path):
    model, w0, seen, result = _linear_run(tmp_path, mixed_precision="bf16", max_steps=20)
    assert seen.count(torch.bfloat16) == 20  # every forward ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32
    loss = result.losses.query("term == 'loss'")["value"]
    assert loss.iloc[-3:].mean() < 0.5 * loss.iloc[:3].mean()


def test_training_precision_and_the_frozen_weights_dtype(monkeypatch):
    from kd_core.train.loop import training_precision, weight_dtype

    assert [training_precision(m, cpu=True) for m in ("no", False, None, "fp16", "bf16", "auto")] == \
        ["no", "no", "no", "no", "bf16", "no"]  # no fp16 autocast on a CPU
    assert training_precision("fp16", cpu=False) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, want in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert training_precision("auto", cpu=False) == want
    assert [weight_dtype(m) for m in ("no", "fp16", "bf16")] == [torch.float32, torch.float16, torch.bfloat16]


def test_inf_loss_stops_with_one_line(tmp_path):
    model = make_model()

    def loss_fn(model, batch, gen):
        idx = batch.local
        task = ((model(X[idx]).squeeze(-1) - Y[idx]) ** 2).mean()
        return {"loss": task * float("inf")}

    with pytest.raises(KDError) as info:
        Trainer(model, loss_fn, len(X), tmp_path, CFG).fit()
    assert "loss became inf at step 0" in str(info.value) and "no checkpoint was written yet" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "loss.parquet").exists()


def test_equal_accuracy_goes_to_the_lower_validation_loss(tmp_path):
    """An accuracy that a small validation split saturates early picks, among its ties, the lowest loss."""
    model = make_model()
    evals = iter([(0.5, 1.0), (1.0, 0.9), (1.0, 0.4), (1.0, 0.6)])
    snapshots = []

    def val_fn(model):
        snapshots.append([p.detach().clone() for p in model.parameters()])
        acc, loss = next(evals)
        return {"loss": loss, "accuracy": acc}

    cfg = TrainConfig(**{**CFG.__dict__, "eval_every": 3, "monitor": "accuracy", "monitor_mode": "max", "restore_best": True})
    result = Trainer(model, loss_fn_for(model), len(X), tmp_path, cfg, val_fn=val_fn).fit()
    assert result.best_step == 9 and result.best_val == 1.0
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), snapshots[2], strict=True))


def test_ema_weights_end_the_run_and_resume_exactly(tmp_path):
    from dataclasses import replace

    cfg = replace(CFG, ema_decay=0.9)
    plain, _ = final_weights(tmp_path / "plain")
    ema, _ = final_weights(tmp_path / "ema", cfg=cfg)
    # the EMA lags the trained weights: the run ends with different, finite weights
    assert all(torch.isfinite(p).all() for p in ema.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(plain.parameters(), ema.parameters(), strict=True))
    with pytest.raises(KeyboardInterrupt):
        final_weights(tmp_path / "run", cfg=cfg, stop_at=8)
    resumed, result = final_weights(tmp_path / "run", cfg=cfg)
    assert result.resumed_from == 6
    for a, b in zip(ema.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_best_weights_and_resume_carry_batch_norm_statistics(tmp_path):
    """Restoring the best weights restores the running statistics they were evaluated with."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))
    snapshots, vals = [], iter([0.5, 0.9, 0.8])

    def loss_fn(model, batch, gen):
        idx = batch.local
        task = ((model(X[idx]).squeeze(-1) - Y[idx]) ** 2).mean()
        return {"loss": task}

    def val_fn(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": next(vals)}

    cfg = TrainConfig(**{**CFG.__dict__, "max_steps": 9, "eval_every": 3, "restore_best": True, "ema_decay": None})
    Trainer(model, loss_fn, len(X), tmp_path, cfg, val_fn=val_fn).fit()
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):  # an integer counter, not used with a momentum
            continue
        assert torch.equal(v, snapshots[0][k]), k  # running_mean / running_var too, not only the parameters
    saved = load_file(str(complete_checkpoints(tmp_path / "checkpoints")[-1] / "trainable.safetensors"))
    assert {"1.running_mean", "1.running_var"} <= set(saved)


def test_shared_helpers():
    from kd_core.train.loop import Batch, chunked_mean, holdout_split, run_key, steps_per_epoch

    val, train = holdout_split(10, 0.2, seed=1)
    assert len(val) == 2 and sorted(torch.cat([val, train]).tolist()) == list(range(10))
    assert torch.equal(holdout_split(10, 0.2, seed=1)[0], val)  # seeded
    assert len(holdout_split(10, 0.0, 1)[0]) == 0 and len(holdout_split(1, 0.5, 1)[0]) == 0
    assert len(holdout_split(2, 0.9, 1)[1]) == 1  # never every example
    assert steps_per_epoch(64, 4, 3) == 5 and steps_per_epoch(3, 8) == 1
    assert run_key(a=1, b=[2]) == run_key(b=[2], a=1) != run_key(a=2, b=[2]) and len(run_key(a=1)) == 16
    b = Batch(torch.arange(6), rank=1, world=2)
    assert b.local.tolist() == [1, 3, 5] and b.shard(list("abcdef")) == ["b", "d", "f"] and len(b) == 6
    # the mean over examples, not over chunks (a short last chunk weighs less); each chunk's draws fixed
    means = chunked_mean(lambda ids, gen: {"x": ids.float().mean()}, torch.arange(20), seed=0, chunk=16)
    assert means["x"] == pytest.approx(9.5)
    draws = [chunked_mean(lambda ids, gen: {"r": torch.rand(1, generator=gen)}, torch.arange(4), seed=7) for _ in "ab"]
    assert draws[0] == draws[1]


def _stepped_val(values_by_step: dict[int, float], every: int, done_evals: int = 0):
    """A validation function whose value is fixed by the step it runs at (``done_evals`` evaluations
    already ran before a resume), so that an interrupted run sees the same values as an uninterrupted one."""
    calls = {"n": done_evals}

    def val_fn(model):
        calls["n"] += 1
        return {"loss": values_by_step[calls["n"] * every]}

    return val_fn


def test_resume_in_the_middle_of_early_stopping_patience_ends_as_the_uninterrupted_run(tmp_path):
    values = {2: 1.0, 4: 0.5, 6: 0.7, 8: 0.8, 10: 0.9, 12: 1.0, 14: 1.1}  # best at 4; patience 3 runs out at 10
    cfg = TrainConfig(**{**CFG.__dict__, "max_steps": 100, "eval_every": 2, "patience": 3})
    reference = make_model()
    expected = Trainer(reference, loss_fn_for(reference), len(X), tmp_path / "ref", cfg, val_fn=_stepped_val(values, 2)).fit()
    assert expected.stopped_early and expected.steps == 10 and expected.best_step == 4
    model = make_model()
    with pytest.raises(KeyboardInterrupt):  # dies during step 8: the step-6 checkpoint holds one bad evaluation
        Trainer(model, loss_fn_for(model, stop_at=8), len(X), tmp_path / "run", cfg, val_fn=_stepped_val(values, 2)).fit()
    model = make_model()
    result = Trainer(model, loss_fn_for(model), len(X), tmp_path / "run", cfg, val_fn=_stepped_val(values, 2, done_evals=3)).fit()
    assert result.resumed_from == 6 and result.stopped_early and result.steps == 10
    assert (result.best_step, result.best_val) == (expected.best_step, expected.best_val)
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), model.parameters(), strict=True))  # the best, restored
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref" / "loss.parquet"), pd.read_parquet(tmp_path / "run" / "loss.parquet"))


def test_retention_after_a_damaged_newest_checkpoint_keeps_intact_ones(tmp_path):
    """keep_checkpoints 2: the damaged newest is set aside, not counted; the resumed run's saves replace the
    pruned ones and leave two intact checkpoints beside the damaged one."""
    with pytest.raises(KeyboardInterrupt):
        final_weights(tmp_path, stop_at=11)  # checkpoints step-6 and step-9
    damage(tmp_path / "checkpoints" / "step-00000009" / "trainable.safetensors", "flipped")
    _, result = final_weights(tmp_path)
    assert result.resumed_from == 6
    from kd_core.train.loop import checkpoint_meta

    kept = complete_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["step-00000009", "step-00000012"]
    assert all(checkpoint_meta(p)[0] is not None for p in kept)  # intact: the step-9 one made again
    assert (tmp_path / "checkpoints" / "damaged-step-00000009").is_dir()
    assert not (tmp_path / "checkpoints" / "step-00000006").exists()


class TargetLoss:
    """A loss with state: the task MSE plus agreement with an EMA target network of the model (the
    shape of latent consistency distillation's online / target pair)."""

    def __init__(self, model, decay=0.8, stop_at=None):
        from kd_core.train.targets import EMATarget

        self.target, self.calls, self.stop_at, self.updates = EMATarget(model, decay), 0, stop_at, []

    def __call__(self, model, batch, gen):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        idx = batch.local
        out = model(X[idx]).squeeze(-1)
        with torch.no_grad():
            target = self.target.net(X[idx]).squeeze(-1)
        task, agree = ((out - Y[idx]) ** 2).mean(), ((out - target) ** 2).mean()
        return {"loss": task + agree, "task_mse": task, "target_mse": agree}

    def after_step(self, model, step):
        self.updates.append(step)
        self.target.update(model)

    def state_dict(self):
        return self.target.state_dict()

    def load_state_dict(self, state):
        self.target.load_state_dict(state)


def _target_run(folder, stop_at=None):
    model = make_model()
    loss = TargetLoss(model, stop_at=stop_at)
    return model, loss, Trainer(model, loss, len(X), folder, CFG).fit()


def test_a_loss_with_a_target_network_follows_the_steps_and_resumes_exactly(tmp_path):
    model, loss, _ = _target_run(tmp_path / "ref")
    assert loss.updates == list(range(12))  # once after every optimizer step
    # the target lags the trained weights by the EMA, and is not the initial network either
    first = make_model().state_dict()
    target = loss.target.state_dict()
    assert not torch.equal(target["0.weight"], model.state_dict()["0.weight"])
    assert not torch.equal(target["0.weight"], first["0.weight"])
    with pytest.raises(KeyboardInterrupt):
        _target_run(tmp_path / "run", stop_at=8)  # dies during step 8, after the step-6 checkpoint
    last = complete_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert (last / "loss_state.safetensors").is_file()
    resumed, resumed_loss, result = _target_run(tmp_path / "run")
    assert result.resumed_from == 6 and resumed_loss.updates == list(range(6, 12))
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    for k, v in loss.target.state_dict().items():
        assert torch.equal(v, resumed_loss.target.state_dict()[k]), k
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref" / "loss.parquet"),
                                  pd.read_parquet(tmp_path / "run" / "loss.parquet"))


def test_ema_target_update_and_decay_bounds():
    from kd_core.train.targets import EMATarget

    online = torch.nn.Linear(2, 1)
    target = EMATarget(online, 0.75)
    assert not any(p.requires_grad for p in target.net.parameters())
    with torch.no_grad():
        before = target.net.weight.clone()
        online.weight.add_(4.0)
    target.update(online)
    assert torch.allclose(target.net.weight, 0.75 * before + 0.25 * online.weight)
    with pytest.raises(ValueError, match="EMA decay 1.0 is outside"):
        EMATarget(online, 1.0)


TARGET_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from safetensors.torch import save_file
    from kd_core.launch import launch_processes
    from kd_core.train.loop import TrainConfig, Trainer
    from tests.train.test_loop import TargetLoss

    out, n = sys.argv[1], int(sys.argv[2])
    if not launch_processes(__file__, n):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))  # no dropout
        loss = TargetLoss(model)
        cfg = TrainConfig(max_steps=6, batch_size=8, lr=0.05, optimizer="sgd", momentum=0.9, checkpoint_every=3,
                          keep_checkpoints=3, seed=5, device="cpu")
        trainer = Trainer(model, loss, 64, out, cfg)
        trainer.fit()
        rank = trainer.accelerator.process_index
        save_file(loss.state_dict(), f"{out}/target{rank}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/model{rank}.safetensors")
""")


@pytest.mark.slow  # ~23 s (three launches); the one-process resume test above is in the default tier
def test_a_loss_with_state_in_two_processes(tmp_path):
    """gloo on the CPU: both ranks keep the same target; it is the one-process run's; resuming the
    two-process run from its middle checkpoint ends with the same target again."""
    from safetensors.torch import load_file as load

    script = tmp_path / "train.py"
    script.write_text(TARGET_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def launch(out, n):
        done = subprocess.run([sys.executable, str(script), str(out), str(n)], env={**os.environ, "PYTHONPATH": root},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    launch(tmp_path / "one", 1)
    launch(tmp_path / "two", 2)
    one, two = load(tmp_path / "one" / "target0.safetensors"), load(tmp_path / "two" / "target0.safetensors")
    assert all(torch.equal(v, load(tmp_path / "two" / "target1.safetensors")[k]) for k, v in two.items())
    assert all((v - one[k]).abs().max() < 1e-6 for k, v in two.items())
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step-00000006")
    final = {k: v.clone() for k, v in two.items()}
    assert "resuming from" in launch(tmp_path / "two", 2)
    again = load(tmp_path / "two" / "target0.safetensors")
    assert all(torch.equal(v, final[k]) for k, v in again.items())
