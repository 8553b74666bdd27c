"""config/tiny.yaml end to end: SDXL teacher and SD 1.x student code paths on tiny random pipelines."""

import json

import numpy as np
import pandas as pd
import pytest
from diffusers import DiffusionPipeline
from PIL import Image
from safetensors.torch import load_file

from ..conftest import assert_drawn
from .conftest import copy_repo, planned_jobs, run

pytestmark = pytest.mark.workflow  # runs Snakemake end to end


@pytest.mark.slow
def test_tiny_config_runs_sdxl_and_sd_pipelines(tmp_path):
    repo = copy_repo(tmp_path)
    run(repo, "--configfile", "config/tiny.yaml")
    out = repo / "results" / "tiny"
    assert type(DiffusionPipeline.from_pretrained(out / "models" / "tiny_sdxl")).__name__ == "StableDiffusionXLPipeline"
    images = out / "images"
    teacher = pd.concat([pd.read_parquet(images / "teacher" / f"{s}.parquet") for s in ("train", "eval")], ignore_index=True)
    student = pd.concat([pd.read_parquet(images / "base_student" / f"{s}.parquet") for s in ("eval", "filler")],
                        ignore_index=True)
    assert len(teacher) == 7 and (teacher["scheduler"] == "euler").all() and (teacher["guidance_scale"] == 5.0).all()
    assert set(student["split"]) == {"eval", "filler"} and len(student) == 6
    assert teacher["negative_prompt"].str.contains("blurry").all()
    for f in teacher["file"]:
        assert_drawn(out / "images" / "teacher" / f, (64, 64))
    lora = json.loads((out / "models" / "lora_student" / "lora_config.json").read_text())
    assert lora["lora"]["text_encoder"] is True and lora["steps"] == 2
    keys = load_file(out / "models" / "lora_student" / "pytorch_lora_weights.safetensors")
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    assert (out / "models" / "lora_student" / "kohya_lora.safetensors").is_file()
    tuned = pd.concat([pd.read_parquet(images / "lora_student" / f"{s}.parquet") for s in ("eval", "filler")],
                      ignore_index=True)
    assert list(tuned["file"]) == list(student["file"])
    # the LoRA student sampled with its adapter: its images are not the base student's
    differ = [np.asarray(Image.open(images / "lora_student" / f)).tolist() != np.asarray(Image.open(images / "base_student" / f)).tolist()
              for f in student["file"]]
    assert all(differ), differ
    assert planned_jobs(repo, "--configfile", "config/tiny.yaml") == {}
