"""The speed switches: each off by default, each leaves the model's outputs as they were (to float
rounding), a failing compiler falls back to eager with one warning."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from kd_core.config import build
from kd_core.fast_paths import (
    FastPaths,
    TrainFastPaths,
    apply_to_pipeline,
    compile_guarded,
    enable_gradient_checkpointing,
    fused_adamw,
    set_tf32,
)
from kd_core.generate import GenerationConfig
from kd_core.train.loop import TrainConfig


def _unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=2, norm_num_groups=4).eval()


def _inputs(n: int = 2) -> tuple:
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, 4, 8, 8, generator=gen), torch.tensor([10] * n),
            torch.randn(n, 3, 8, generator=gen))


class _Pipe:
    def __init__(self):
        self.unet = _unet()
        self.vae = None


def test_defaults_are_plain_diffusers():
    assert GenerationConfig().fast_paths == FastPaths(False, False, "default", False)
    assert TrainConfig().fast_paths == TrainFastPaths(channels_last=False, compile=False, compile_mode="default",
                                                      tf32=False, gradient_checkpointing=False, fused_optimizer=None)
    # built from a config section as the workflow does
    cfg = build(GenerationConfig, {"fast_paths": {"channels_last": True, "compile": False, "compile_mode": "default",
                                                  "tf32": False}})
    assert cfg.fast_paths == FastPaths(channels_last=True)
    train = build(TrainConfig, {"fast_paths": {"gradient_checkpointing": True, "fused_optimizer": False}})
    assert train.fast_paths.gradient_checkpointing and train.fast_paths.fused_optimizer is False


def test_fused_optimizer_by_device():
    assert fused_adamw(None, torch.device("cpu")) is True
    assert fused_adamw(None, torch.device("cuda")) is False
    assert fused_adamw(True, torch.device("cuda")) is True and fused_adamw(False, torch.device("cpu")) is False


def test_tf32_switch_sets_and_restores_matmul_precision():
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        set_tf32(False)
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_channels_last_keeps_the_outputs():
    x, t, cond = _inputs()
    pipe = _Pipe()
    with torch.no_grad():
        ref = pipe.unet(x, t, cond).sample
        apply_to_pipeline(pipe, FastPaths(channels_last=True))
        conv = pipe.unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        out = pipe.unet(x, t, cond).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


class _ConvNet(torch.nn.Module):
    """A model whose forward is user code (dynamo leaves frames of torch's own modules alone)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.b(torch.nn.functional.silu(self.a(x)))


def test_compile_guarded_runs_compiled_then_falls_back_with_one_warning(capfd):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    net = _ConvNet()
    with torch.no_grad():
        ref = net(x)
    calls = []

    def counting_backend(gm, example_inputs):  # a backend that works: the compiled graph runs
        calls.append(len(example_inputs))
        return gm.forward

    keys = list(net.state_dict())
    compile_guarded(net, "U-Net", backend=counting_backend)
    with torch.no_grad():
        out = net(x)
    assert calls, "the compiled path did not run"
    torch.testing.assert_close(out, ref)
    assert list(net.state_dict()) == keys and isinstance(net, _ConvNet)  # compiled in place

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    net2 = _ConvNet()
    compile_guarded(net2, "U-Net", backend=broken_backend)
    with torch.no_grad():
        first = net2(x)
        second = net2(x)
    torch.testing.assert_close(first, ref)
    torch.testing.assert_close(second, ref)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "torch.compile of the U-Net failed" in line]
    assert len(lines) == 1 and "running it uncompiled" in lines[0], err
    assert net2._compiled_call_impl is None


def test_gradient_checkpointing_keeps_the_gradients():
    x, t, cond = _inputs()
    grads = []
    for checkpointing in (False, True):
        unet = _unet().train()
        if checkpointing:
            assert enable_gradient_checkpointing(unet) == 1 and unet.is_gradient_checkpointing
        unet(x, t, cond).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in unet.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    frozen = _unet().requires_grad_(False)
    assert enable_gradient_checkpointing(frozen) == 0  # nothing trained, nothing switched


def test_trainer_applies_the_training_switches(tmp_path):
    """Through the Trainer: checkpointed, channels-last, unfused training ends where the plain run ends."""
    from kd_core.train.loop import Trainer, trainable_state

    x, t, cond = _inputs(4)

    def loss(model, batch, gen):
        out = model(x[batch.indices], t[batch.indices], cond[batch.indices]).sample
        return {"loss": out.square().mean()}

    finals = []
    for name, fast in (("plain", TrainFastPaths()),
                       ("fast", TrainFastPaths(channels_last=True, gradient_checkpointing=True, fused_optimizer=False))):
        unet = _unet().train()
        cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-3, device="cpu", checkpoint_every=10, fast_paths=fast)
        trainer = Trainer(unet, loss, 4, tmp_path / name, cfg, name=name)
        if name == "fast":
            assert unet.is_gradient_checkpointing
            assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
            assert trainer.opt.optimizer.defaults["fused"] is None  # PyTorch's default loop
        else:
            assert trainer.opt.optimizer.defaults["fused"] is True and not unet.is_gradient_checkpointing
        trainer.fit()
        finals.append(trainable_state(trainer.unwrapped))
    # AdamW moves a weight whose gradient is near zero by up to lr a step whatever the gradient's
    # rounding, and the two layouts round differently: one weight in 2,304 ended 1.5e-5 apart on one
    # CPU. So: all within what two steps can move, and all but a few within 1e-6 (a switch that changed
    # the computation moves nearly every weight by ~lr).
    diff = torch.cat([(finals[1][k] - finals[0][k]).abs().flatten() for k in finals[0]])
    assert diff.max() <= 2 * 1e-3 and (diff > 1e-6).float().mean() < 1e-3, (
        f"{int((diff > 1e-6).sum())} of {diff.numel()} weights differ by > 1e-6 (max {diff.max():.3g})")


def test_trainer_compiles_the_trained_model_with_its_feature_hooks(tmp_path, monkeypatch, capfd):
    """``compile``: forward and backward of the trained model run as compiled graphs (AOTAutograd, no
    fallback), feature hooks included, and training ends where the eager run ends."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    import kd_core.fast_paths as fast_paths
    from kd_core.train.distill import FeatureHooks
    from kd_core.train.loop import Trainer, trainable_state

    graphs = {"forward": 0, "backward": 0}

    def counting(kind):
        def compiler(gm, example_inputs):
            graphs[kind] += 1
            return make_boxed_func(gm.forward)
        return compiler

    backend = aot_autograd(fw_compiler=counting("forward"), bw_compiler=counting("backward"))
    guarded = fast_paths.compile_guarded
    monkeypatch.setattr(fast_paths, "compile_guarded", lambda m, name, mode: guarded(m, name, mode, backend=backend))
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    finals = []
    for name, fast in (("eager", TrainFastPaths()), ("compiled", TrainFastPaths(compile=True))):
        net = _ConvNet().train()
        hooks = FeatureHooks(net, ["a"])

        def loss(model, batch, gen, hooks=hooks):
            out = model(x[batch.indices])
            return {"loss": out.square().mean() + hooks.pop()["a"].square().mean()}

        cfg = TrainConfig(max_steps=3, batch_size=2, lr=1e-2, device="cpu", checkpoint_every=2, fast_paths=fast)
        trainer = Trainer(net, loss, 4, tmp_path / name, cfg, name=name)
        trainer.fit()
        hooks.remove()
        assert (net._compiled_call_impl is not None) == (name == "compiled")  # compiled to the end: no fallback
        finals.append(trainable_state(trainer.unwrapped))
    assert graphs["forward"] >= 1 and graphs["backward"] >= 1, graphs
    assert "torch.compile of the" not in capfd.readouterr().err
    assert list(finals[1]) == list(finals[0])  # checkpoint keys without a compile prefix
    for k in finals[0]:
        torch.testing.assert_close(finals[1][k], finals[0][k], rtol=1e-5, atol=1e-6)
