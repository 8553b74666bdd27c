"""Damaged model folders: one line naming the file, before from_pretrained reads it."""

import shutil

import pytest
import torch

from kd_core.errors import KDError
from kd_core.models.integrity import check_adapter_folder, check_model_folder, safetensors_problem
from kd_core.models.loading import load_pipeline, load_unet

from ..conftest import damage

FILES = ["unet/diffusion_pytorch_model.safetensors", "unet/config.json", "vae/diffusion_pytorch_model.safetensors",
         "text_encoder/model.safetensors", "text_encoder/config.json", "model_index.json"]


CASES = [(name, kind) for name in FILES for kind in ("corrupt", "truncated", "empty", "deleted", "appended")
         if kind != "appended" or name.endswith(".safetensors")]  # bytes after a JSON object: 'corrupt' covers it


@pytest.mark.parametrize("name,kind", CASES)
def test_a_damaged_file_is_one_line_naming_it(tiny_sd, tmp_path, name, kind):
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd, folder)
    damage(folder / name, kind)
    with pytest.raises(KDError) as info:
        load_pipeline(str(folder), torch.device("cpu"), torch.float32)
    msg = str(info.value)
    assert "\n" not in msg and "rebuild" in msg
    component = name.split("/")[0]
    if kind == "deleted" and name == "model_index.json":  # then it is a single-model folder without config.json
        assert f"{folder} has no config.json" in msg
    elif kind == "deleted" and name.endswith(".safetensors"):
        assert f"{folder / component} has no safetensors weights" in msg
    elif kind == "deleted":
        assert f"{folder / component} has no config.json" in msg
    else:
        assert str(folder / name) in msg, msg


def test_whole_folders_pass_and_load(tiny_sd, tmp_path):
    check_model_folder(tiny_sd)
    check_model_folder(tiny_sd / "unet", "unet")
    assert load_unet(str(tiny_sd), torch.device("cpu")).config.cross_attention_dim > 0
    for f in tiny_sd.rglob("*.safetensors"):
        assert safetensors_problem(f) is None


def test_pickled_weights_and_lost_components_are_named(tiny_sd, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(KDError, match=r"only \['diffusion_pytorch_model.bin'\]: pickled weights"):
        load_unet(str(folder), torch.device("cpu"))
    shutil.copy(tiny_sd / "unet" / weights.name, weights)
    shutil.rmtree(folder / "vae")
    with pytest.raises(KDError, match="component folder vae/ that model_index.json lists is missing"):
        check_model_folder(folder)
    with pytest.raises(KDError, match="is not a folder"):
        check_model_folder(folder / "model_index.json")
    with pytest.raises(KDError, match="has no safetensors weights"):
        check_adapter_folder(tmp_path)
