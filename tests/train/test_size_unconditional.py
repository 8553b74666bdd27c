"""The model-size study on unconditional DDPM teachers, pixel (DDPMPipeline) and latent
(LDMPipeline with a KL autoencoder): width students distilled unconditionally, sampled, timed,
and analysed like the text-conditioned ones."""

import json

import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline, LDMPipeline
from safetensors import safe_open

from kd_core.captions import DataConfig
from kd_core.generate import GenerationConfig, generate_images
from kd_core.metrics.efficiency import EfficiencyConfig, measure_model
from kd_core.metrics.timestep import TimestepConfig, timestep_mse
from kd_core.metrics.trajectory import TrajectoryConfig, trajectories
from kd_core.models.tiny import tiny_vae
from kd_core.train.ddpm import DDPMConfig, build_ddpm_unet
from kd_core.train.loop import TrainConfig
from kd_core.train.size_study import SizeStudyConfig, train_width_student

from ..conftest import assert_drawn, random_image_manifest

TINY = DDPMConfig(image_size=16, channels=(16, 32), attention=(False, True), layers_per_block=1, norm_num_groups=8)


@pytest.fixture(scope="module", params=["pixel", "latent"])
def teacher_dir(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    if request.param == "pixel":
        pipe = DDPMPipeline(unet=build_ddpm_unet(TINY), scheduler=DDPMScheduler(num_train_timesteps=100, clip_sample=True))
    else:  # 16 px images, 8x8x4 latents
        pipe = LDMPipeline(vqvae=tiny_vae(), unet=build_ddpm_unet(TINY, in_channels=4, sample_size=8),
                           scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    pipe.save_pretrained(root / "teacher", safe_serialization=True)
    random_image_manifest(root, 6, size=16, prompt="", first_split=4)
    return root


def test_unconditional_width_student_and_analyses(teacher_dir, tmp_path):
    teacher, manifest = str(teacher_dir / "teacher"), str(teacher_dir / "manifest.parquet")
    pixel = teacher_dir.name.startswith("pixel")
    train_width_student(teacher, DataConfig(source=manifest), tmp_path / "w0p5", tmp_path / "run", SizeStudyConfig(factor=0.5, val_fraction=0.25),
                        TrainConfig(max_steps=2, batch_size=2, device="cpu", checkpoint_every=1, lr=1e-3))
    student = DiffusionPipeline.from_pretrained(tmp_path / "w0p5")
    assert type(student).__name__ == ("DDPMPipeline" if pixel else "LDMPipeline")
    assert list(student.unet.config.block_out_channels) == [8, 16]
    assert student.scheduler.config.clip_sample == pixel  # pixels keep x0 clipping, latents do not
    assert json.loads((tmp_path / "w0p5" / "size_study.json").read_text())["params_student"] > 0
    # sampled from a prompt table: the prompts are ignored, the seeds fix the images
    prompts = pd.read_parquet(manifest)
    man = generate_images(str(tmp_path / "w0p5"), prompts, tmp_path / "images", GenerationConfig(steps=3, batch_size=4, device="cpu"),
                          "w0p5")
    assert len(man) == 6
    for f in man["file"]:
        assert_drawn(tmp_path / "images" / f, (16, 16))
    eff = pd.DataFrame(measure_model("w0p5", str(tmp_path / "w0p5"), GenerationConfig(steps=3, device="cpu"),
                                     EfficiencyConfig(warmup=0, repeats=2, batch_size=2))).set_index("metric")["value"]
    assert eff["latency_per_step"] > 0 and eff["latency_per_image"] >= eff["latency_per_step"] * 3 * 0.99
    students, factors = {"w0p5": str(tmp_path / "w0p5")}, {"w0p5": 0.5}
    ts = timestep_mse(teacher, students, factors, DataConfig(source=manifest, split="eval"), None,
                      TimestepConfig(buckets=2, batch_size=2, device="cpu"), n_boot=100)
    assert set(ts["model"]) == {"teacher", "w0p5"} and (ts.loc[ts["target"] == "teacher", "mse"] > 0).all()
    tr = trajectories(teacher, students, factors, prompts, None, tmp_path / "x0.safetensors",
                      TrajectoryConfig(n_prompts=2, steps=3, grid_steps=2, device="cpu"), n_boot=100)
    assert set(tr["step"]) == {0, 1, 2} and (tr["distance"] > 0).all()
    with safe_open(tmp_path / "x0.safetensors", "pt") as f:
        assert f.get_tensor("w0p5").shape == (2, 2, 3, 16, 16)  # pixels: x0 itself; latents: x0 decoded
        # no text: the denoising grid names each sample by its seed
        assert f.metadata()["prompts"].split("\n") == [f"seed {s}" for s in prompts["seed"][:2]]
