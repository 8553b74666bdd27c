"""Latent consistency distillation: the solver and boundary condition against diffusers' own, the
loss's parts, and both methods trained end to end on tiny pipelines, their outputs reloaded in plain
diffusers and sampled with LCMScheduler."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, LCMScheduler
from safetensors.torch import load_file

from kd_core.captions import DataConfig
from kd_core.errors import KDError
from kd_core.generate import GenerationConfig, generate_images
from kd_core.prompts import PromptConfig, synthesize_prompts
from kd_core.train.diffusion import Diffusion
from kd_core.train.loop import TrainConfig
from kd_core.train.lora import KOHYA_FILE
from kd_core.train.step_distill import (
    SkippingDDIM,
    StepDistillConfig,
    boundary_scalings,
    check_config,
    train_step_distill,
)

TRAIN = TrainConfig(max_steps=3, batch_size=2, lr=1e-2, lr_scheduler="constant", checkpoint_every=2, device="cpu")
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def test_boundary_condition_is_lcm_scheduler_s():
    lcm = LCMScheduler(**SCHEDULE)
    for t in (0, 1, 19, 259, 999):
        ours = boundary_scalings(torch.tensor([t]))
        theirs = lcm.get_scalings_for_boundary_condition_discrete(t)
        assert [float(v) for v in ours] == pytest.approx([float(v) for v in theirs], rel=1e-6)
    c_skip, c_out = boundary_scalings(torch.tensor([0]))
    assert float(c_skip) == 1 and float(c_out) == 0  # f(x, 0) = x


def test_skipping_solver_grid_and_step_are_ddim_s():
    sched = DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, clip_sample=False)
    solver = SkippingDDIM(sched.alphas_cumprod, 1000, 50)
    assert solver.k == 20 and solver.timesteps[0] == 19 and solver.timesteps[-1] == 999 and len(solver.timesteps) == 50
    index, start, end = solver.draw(500, torch.Generator().manual_seed(0))
    assert torch.equal(start, solver.timesteps[index]) and torch.equal(end, (start - 20).clamp(min=0))
    assert set(index.tolist()) == set(range(50))  # every grid point is drawn
    # one solver step equals a DDIM step (eta 0) of a 50-step DDIM sampler from the same point
    sched.set_timesteps(50)
    gen = torch.Generator().manual_seed(1)
    x, eps = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    for i in (5, 30, 49):
        t = int(solver.timesteps[i])
        abar = sched.alphas_cumprod[t]
        x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        expected = sched.step(eps, t, x).prev_sample
        assert torch.allclose(solver.step(x0, eps, torch.tensor([i])), expected, atol=1e-5), i


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_and_noise_from_every_prediction_type(prediction_type):
    d = Diffusion({**SCHEDULE, "prediction_type": prediction_type})
    gen = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(6, 4, 8, 8, generator=gen), torch.randn(6, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    b = d.noised(z0, noise, t)
    x0, eps = d.x0_eps(b.target, t, b.noisy)
    assert torch.allclose(x0, z0, atol=1e-3) and torch.allclose(eps, noise, atol=2e-3)


@pytest.mark.parametrize(("changes", "key"), [({"method": "dmd"}, "method"), ({"loss": "l1"}, "loss"),
                                              ({"guidance_min": 5.0, "guidance_max": 4.0}, "guidance_min")])
def test_bad_settings_are_named(changes, key):
    with pytest.raises(KDError, match=f"step_distill.{key}"):
        check_config(StepDistillConfig(**changes))


@pytest.fixture(scope="module")
def teacher_images(tmp_path_factory, tiny_sd):
    out = tmp_path_factory.mktemp("teacher")
    prompts = synthesize_prompts(PromptConfig(grammar="dogs", filler_grammar="artistic", n_train=6, n_eval=2, n_filler=1))
    generate_images(str(tiny_sd), prompts["train"], out, GenerationConfig(steps=2, resolution=64, batch_size=3, device="cpu"),
                    "teacher")
    return out / "manifest.parquet"


def _sample(pipe, steps=2, **kw):
    return pipe("a professional photo of a pug sleeping", num_inference_steps=steps, height=64, width=64,
                generator=torch.Generator().manual_seed(0), output_type="np", **kw).images


def test_lcm_lora_trains_and_samples_in_plain_diffusers(tmp_path, tiny_sd, teacher_images):
    cfg = StepDistillConfig(method="lcm_lora", rank=4, alpha=8.0, guidance_min=2.0, guidance_max=4.0, resolution=64,
                            val_fraction=0.25, kohya=True)
    result = train_step_distill(str(tiny_sd), DataConfig(str(teacher_images)), tmp_path / "adapter", tmp_path / "run",
                                cfg, TRAIN)
    assert result.steps == 3
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    assert {"loss", "consistency_l2"} <= set(loss["term"]) and (loss["split"] == "val").any()
    assert np.isfinite(loss["value"]).all()
    meta = json.loads((tmp_path / "adapter" / "lora_config.json").read_text())
    assert meta["step_distill"]["method"] == "lcm_lora" and meta["steps"] == 3
    # as the published LCM-LoRA is used: a plain pipeline, the adapter, LCMScheduler, no guidance
    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd))
    plain = _sample(pipe, guidance_scale=1.0)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(tmp_path / "adapter"))
    adapted = {n for n, m in pipe.unet.named_modules() if len(getattr(m, "lora_A", ()))}
    assert any(n.endswith("conv1") for n in adapted) and any(n.endswith("to_q") for n in adapted)
    images = _sample(pipe, guidance_scale=1.0)
    assert np.isfinite(images).all() and np.abs(images - plain).max() > 1e-3
    # the workflow's images of the adapter (kd_core.generate: its scheduler 'lcm', guidance 1) are the
    # plain pipeline's, prompt by prompt and seed by seed, up to PNG rounding
    from PIL import Image

    prompts = synthesize_prompts(PromptConfig(grammar="dogs", filler_grammar="artistic", n_train=2, n_eval=3, n_filler=1))["eval"]
    gen = GenerationConfig(steps=2, resolution=64, batch_size=1, device="cpu", scheduler="lcm", guidance_scale=1.0,
                           lora=str(tmp_path / "adapter"))
    manifest = generate_images(str(tiny_sd), prompts, tmp_path / "images", gen, "lcm_lora_s2")
    worst = 0
    for row in manifest.itertuples():
        ours = np.asarray(Image.open(tmp_path / "images" / row.file), dtype=np.int16)
        theirs = pipe(row.prompt, num_inference_steps=2, guidance_scale=1.0, height=64, width=64,
                      generator=torch.Generator("cpu").manual_seed(int(row.seed)), output_type="pil").images[0]
        worst = max(worst, int(np.abs(ours - np.asarray(theirs, dtype=np.int16)).max()))
    assert worst == 0, f"the workflow's images differ from plain diffusers' by up to {worst} grey levels"
    # kohya export on request (A1111 / ComfyUI): the file, read by diffusers' kohya loader, samples as the
    # diffusers-format adapter, its alpha (8, not the rank 4) carried
    alphas = {k: v for k, v in load_file(tmp_path / "adapter" / KOHYA_FILE).items() if k.endswith(".alpha")}
    assert alphas and all(float(v) == 8.0 for v in alphas.values()) and all(k.startswith("lora_unet") for k in alphas)
    kohya = DiffusionPipeline.from_pretrained(str(tiny_sd))
    kohya.scheduler = LCMScheduler.from_config(kohya.scheduler.config)
    kohya.load_lora_weights(str(tmp_path / "adapter"), weight_name=KOHYA_FILE)
    from_kohya = _sample(kohya, guidance_scale=1.0)
    assert np.abs(from_kohya - images).max() < 1e-5, f"kohya and diffusers adapters sample {np.abs(from_kohya - images).max():.3g} apart"


def test_lcm_trains_a_guided_student_pipeline_and_resumes_exactly(tmp_path, tiny_sd, teacher_images, monkeypatch):
    """The full LCM student: a pipeline folder with LCMScheduler and a guidance embedding, trained from
    the teacher's weights; a run killed during step 3 resumes from the step-2 checkpoint and ends with
    the uninterrupted run's weights and EMA target network."""
    import kd_core.train.step_distill as sd
    from kd_core.train.loop import complete_checkpoints

    cfg = StepDistillConfig(method="lcm", guidance_min=2.0, guidance_max=4.0, guidance_embedding_dim=32, resolution=64,
                            val_fraction=0.25, ema_decay=0.5)
    data = DataConfig(str(teacher_images))
    train_step_distill(str(tiny_sd), data, tmp_path / "student", tmp_path / "run", cfg, TRAIN)
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "student"))
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.unet.config.time_cond_proj_dim == 32
    teacher = DiffusionPipeline.from_pretrained(str(tiny_sd)).unet.state_dict()
    student = pipe.unet.state_dict()
    assert {k for k in student if k not in teacher} == {"time_embedding.cond_proj.weight"}
    assert any(not torch.equal(student[k], teacher[k]) for k in teacher)  # trained from the teacher's weights
    assert np.isfinite(_sample(pipe, guidance_scale=3.0)).all()  # told the scale through its embedding, no CFG
    assert json.loads((tmp_path / "student" / "step_distill.json").read_text())["step_distill"]["method"] == "lcm"

    calls = {"n": 0}
    real = sd.ConsistencyLoss.__call__

    def dies_in_step_3(self, model, batch, gen):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, model, batch, gen)

    monkeypatch.setattr(sd.ConsistencyLoss, "__call__", dies_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_step_distill(str(tiny_sd), data, tmp_path / "student2", tmp_path / "run2", cfg, TRAIN)
    assert complete_checkpoints(tmp_path / "run2" / "checkpoints")[-1].name == "step-00000002"
    monkeypatch.setattr(sd.ConsistencyLoss, "__call__", real)
    result = train_step_distill(str(tiny_sd), data, tmp_path / "student2", tmp_path / "run2", cfg, TRAIN)
    assert result.resumed_from == 2
    resumed = DiffusionPipeline.from_pretrained(str(tmp_path / "student2")).unet.state_dict()
    assert all(torch.equal(resumed[k], v) for k, v in student.items())
    from safetensors.torch import load_file

    targets = [load_file(p / "checkpoints" / "step-00000003" / "loss_state.safetensors") for p in (tmp_path / "run", tmp_path / "run2")]
    assert targets[0] and all(torch.equal(targets[0][k], targets[1][k]) for k in targets[0])
    assert any(not torch.equal(targets[0][k], student[k]) for k in student)  # the target lags the student
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "loss.parquet"),
                                  pd.read_parquet(tmp_path / "run2" / "loss.parquet"))
