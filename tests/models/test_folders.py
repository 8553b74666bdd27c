import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from kd_core.errors import ConfigError, KDError
from kd_core.experiment import validate_experiment
from kd_core.models.folders import (
    folder_kind,
    missing_targets,
    pipeline_size_multiple,
    require_cached,
    size_multiple,
    weight_modules,
)
from kd_core.models.loading import image_size, load_pipeline

from ..conftest import ROOT, damage, image_folder

SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.mark.parametrize(("unet", "vae", "text", "multiple"), [
    ((320, 640, 1280, 1280), (128, 256, 512, 512), True, 64),  # SD 1.5: VAE factor 8, three down-samplings
    ((320, 640, 1280), (128, 256, 512, 512), True, 32),  # SDXL: VAE factor 8, two down-samplings
    ((32, 64), (16, 32), True, 8),  # tiny SD: 2 x 2 = 4, but text pipelines take multiples of 8 only
    ((64, 128, 256, 256), None, False, 8),  # a pixel DDPM on CIFAR-10
])
def test_size_multiple_of_public_and_tiny_layouts(unet, vae, text, multiple):
    assert size_multiple({"block_out_channels": unet}, vae and {"block_out_channels": vae}, text) == multiple


def test_the_job_refuses_a_size_its_pipeline_cannot_take(tiny_sd):
    pipe = load_pipeline(str(tiny_sd), torch.device("cpu"), torch.float32)
    assert pipeline_size_multiple(tiny_sd) == 8
    assert image_size(pipe, None) == 64 and image_size(pipe, 40) == 40
    with pytest.raises(KDError, match="generation resolution is 36 px, which this model cannot take: .* a multiple of 8 "
                                      r"\(e.g. 32 or 40\)"):
        image_size(pipe, 36, "generation resolution")


def test_folder_kinds(tiny_sd, tmp_path):
    assert folder_kind(tiny_sd) == "a StableDiffusionPipeline pipeline"
    assert folder_kind(tiny_sd / "unet") == "a UNet2DConditionModel model"
    assert folder_kind(tiny_sd / "text_encoder") == "a CLIPTextModel model"
    assert folder_kind(image_folder(tmp_path / "images", ["cat"])) == "an image folder"
    assert folder_kind(tmp_path / "images" / "cat" / "0.png") == "a file"
    assert folder_kind(tmp_path / "nothing") == "missing"
    (tmp_path / "empty").mkdir()
    assert folder_kind(tmp_path / "empty") == "a folder without model files"


def test_lora_targets_match_as_peft_matches(tiny_sd):
    modules = weight_modules(tiny_sd / "unet")
    assert any(m.endswith("attn1.to_q") for m in modules)
    assert missing_targets(modules, ["to_q", "to_out.0", "attn1.to_k", "proj_in"]) == []
    assert missing_targets(modules, ["to_q", "o_q", "nosuch", "to_out.1"]) == ["o_q", "nosuch", "to_out.1"]


def _cache(tmp_path, monkeypatch, offline: bool) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    return cache


def _snapshot(cache: Path, repo: str, source: Path) -> Path:
    """``source`` as the cached ``main`` snapshot of hub repo ``repo`` (what ``hf download`` leaves)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, folder / "snapshots" / "abc123")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc123")
    return folder / "snapshots" / "abc123"


def test_a_hub_id_missing_offline_names_the_download_command(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch, offline=True)
    with pytest.raises(KDError, match="'org/model' \\(no such local folder in .* either\\), which is not in the Hugging Face cache .* run 'hf download org/model' on a"):
        require_cached("org/model", "config key 'models.teacher.source'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the loader downloads it
    assert require_cached("org/model", "x") is None


def test_a_cached_hub_id_is_checked_like_a_local_folder_offline(tiny_sd, tmp_path, monkeypatch):
    cache = _cache(tmp_path, monkeypatch, offline=True)
    snapshot = _snapshot(cache, "org/tiny-sd", tiny_sd)
    assert require_cached("org/tiny-sd", "x") == snapshot
    config = {"models": {"teacher": {"source": "org/tiny-sd", "generation": {"resolution": 40}},
                         "base_student": {"source": "toy:student"}}}
    assert validate_experiment(config, SCHEMA)["models"]["teacher"]["source"] == "org/tiny-sd"
    config["models"]["teacher"]["generation"]["resolution"] = 36  # sizes are read from the cached configs
    with pytest.raises(ConfigError, match="'models.teacher.generation.resolution' is 36 px"):
        validate_experiment(config, SCHEMA)
    config["models"]["teacher"]["generation"]["resolution"] = None
    damage(snapshot / "unet" / "diffusion_pytorch_model.safetensors", "truncated")
    with pytest.raises(ConfigError, match="config key 'models.teacher.source': .*unet/diffusion_pytorch_model.safetensors is truncated"):
        validate_experiment(config, SCHEMA)
