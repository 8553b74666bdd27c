import json

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from kd_core.errors import KDError
from kd_core.world.dataset import WorldDataConfig, load_split, make_real_dataset
from kd_core.world.toy import (
    ENCODINGS,
    SCHEDULE,
    TextEncoderConfig,
    ToyConfig,
    UNetConfig,
    VAEConfig,
    pretrain_toy_models,
    pretrain_toy_unet,
)


def test_schedule_never_clips_latents():
    # DDPMScheduler defaults to clip_sample=True: right for pixels, ruinous for latents.
    assert SCHEDULE["clip_sample"] is False


def test_pretrain_saves_loadable_pipelines(tmp_path):
    make_real_dataset(WorldDataConfig(n_train=64, n_test=16), tmp_path / "data")
    table = tmp_path / "data" / "train.parquet"
    cfg = ToyConfig(vae=VAEConfig(channels=(8, 16, 16), steps=3, batch_size=4), text=TextEncoderConfig(hidden_size=16, layers=1, heads=2),
                    teacher=UNetConfig(channels=(16, 32), steps=3, batch_size=4),
                    student=UNetConfig(channels=(8, 16), steps=3, batch_size=4))
    times = pretrain_toy_models(table, tmp_path / "base", tmp_path / "teacher", tmp_path / "student", tmp_path / "loss", cfg)
    assert set(times) == {"vae_s", "teacher_s", "student_s"}
    for name, width in (("teacher", 16), ("student", 8)):
        sched = json.loads((tmp_path / name / "scheduler" / "scheduler_config.json").read_text())
        assert sched["clip_sample"] is False and sched["_class_name"] == "DDIMScheduler"
        assert (tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        pipe = DiffusionPipeline.from_pretrained(tmp_path / name)
        assert type(pipe).__name__ == "StableDiffusionPipeline"
        assert pipe.unet.config.block_out_channels[0] == width
        assert pipe.vae.config.scaling_factor != 0.18215  # measured, not SD's constant
        out = pipe("a small red circle at the left on a white background", num_inference_steps=2, height=32, width=32,
                   generator=torch.Generator().manual_seed(0), output_type="np").images
        assert out.shape == (1, 32, 32, 3)
    # the text encoder and VAE are shared by teacher and student
    t = DiffusionPipeline.from_pretrained(tmp_path / "teacher")
    s = DiffusionPipeline.from_pretrained(tmp_path / "student")
    assert torch.equal(t.text_encoder.get_input_embeddings().weight,
                       s.text_encoder.get_input_embeddings().weight)
    import pandas as pd
    for part in ("vae", "teacher", "student"):  # each trained on the shared Trainer: a run folder
        loss = pd.read_parquet(tmp_path / "loss" / part / "loss.parquet")
        assert loss.query("term == 'loss'")["step"].tolist() == [1, 2, 3] and loss["value"].notna().all()
        assert (tmp_path / "loss" / part / "checkpoints" / "step-00000003" / "trainer.json").is_file()
    # both U-Nets trained on the base folder's encodings, which match the saved VAE
    enc = load_file(tmp_path / "base" / ENCODINGS)
    assert enc["latent_mean"].shape == (64, 4, 8, 8) and enc["prompt_index"].max() < len(enc["prompt_embeds"]) - 1
    with torch.no_grad():
        x = load_split(table, "train")[1][:4]
        mean = t.vae.encode(x).latent_dist.mean * t.vae.config.scaling_factor
    torch.testing.assert_close(mean, enc["latent_mean"][:4], atol=1e-4, rtol=1e-4)


def test_unknown_toy_role_is_one_line_error(tmp_path):
    with pytest.raises(KDError, match="toy U-Net role 'teachr'; choose one of teacher, student"):
        pretrain_toy_unet(tmp_path, "teachr", tmp_path / "out", tmp_path / "loss.parquet", ToyConfig())
