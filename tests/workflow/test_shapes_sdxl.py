"""The SDXL-style toy teacher (toy:teacher_xl) through the workflow, on the finished smoke run."""

import shutil

import pandas as pd
import pytest
from diffusers import DiffusionPipeline

from ..conftest import assert_drawn
from .conftest import config_with, planned_job_names, planned_jobs, run

pytestmark = pytest.mark.workflow


@pytest.mark.slow  # ~1 min: the teacher, its images, LoRA, two SDXL students and the table
def test_the_sdxl_style_toy_teacher_trains_and_teaches_through_the_workflow(smoke_repo, tmp_path):
    """The smoke run with toy:teacher_xl as its teacher: the world, the toy base and the base student
    are reused; the SDXL-style teacher is trained by its rule, samples the images the SD-layout base
    student is LoRA-tuned on, and is distilled into an SSD-1B-style student (with its ablation) that
    block distillation's table sets against the teacher, the base student and the ablation."""
    repo = tmp_path / "xl"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    config = config_with(repo, "xl.yaml", {
        "models.teacher.source": "toy:teacher_xl", "block_kd.levels": ["ssd_1b"],
        "world.toy.teacher_xl": {"channels": [16, 32, 32], "transformer_depths": [1, 2, 4], "steps": 5, "batch_size": 8},
        "world.toy.text_2": {"hidden_size": 16, "heads": 2},
        "size_study.enabled": False, "dmkd.enabled": False})
    planned = planned_job_names(repo, "--configfile", str(config))
    assert "toy_teacher_xl" in planned and not {j for j in planned if j.startswith(("toy_base", "toy_unet", "world_"))}
    run(repo, "--configfile", str(config))
    out = repo / "results" / "smoke"
    teacher = DiffusionPipeline.from_pretrained(out / "models" / "toy_teacher_xl")
    assert type(teacher).__name__ == "StableDiffusionXLPipeline" and teacher.unet.config.addition_embed_type == "text_time"
    assert pd.read_parquet(out / "train" / "toy" / "teacher_xl" / "loss.parquet").query("term == 'loss'")["step"].max() == 5
    for split in ("train", "eval", "filler"):
        manifest = pd.read_parquet(out / "images" / "teacher" / f"{split}.parquet")
        assert (manifest["source"].str.endswith("toy_teacher_xl")).all()
        assert_drawn(out / "images" / "teacher" / manifest["file"].iloc[0], (32, 32))
    student = DiffusionPipeline.from_pretrained(out / "models" / "ssd_1b")
    assert type(student).__name__ == "StableDiffusionXLPipeline"
    assert list(student.unet.config.transformer_layers_per_block) == [1, 2, 2]  # the innermost depth 4 -> 2 (SSD-1B's 10 -> 4)
    table = pd.read_parquet(out / "metrics" / "block_kd.parquet")
    acc = table[(table["metric"] == "accuracy_all") & (table["model"] == "ssd_1b")]
    assert set(acc["baseline"]) == {"", "teacher", "base_student", "ssd_1b_nofeat"}
    ratio = table[table["metric"] == "step_ms_ratio_teacher"].set_index("model")
    assert set(ratio.index) == {"ssd_1b", "ssd_1b_nofeat"} and (ratio["mean"] > 0).all()
    params = table[table["metric"] == "params"].set_index("model")["mean"]
    assert params["ssd_1b"] < params["teacher"]
    assert planned_jobs(repo, "--configfile", str(config)) == {}
