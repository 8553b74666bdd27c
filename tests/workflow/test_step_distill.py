"""The step-distillation study through Snakemake, added to the finished smoke run: the student and
the teacher at each step count sampled and evaluated, the table, the figures and the paper."""

import shutil

import pandas as pd
import pytest

from .conftest import config_with, planned_job_names, run

pytestmark = [pytest.mark.workflow, pytest.mark.slow]  # ~1 min; the rerun matrix dry-runs the same plan by default


def test_step_distillation_on_the_smoke_run(smoke_repo, tmp_path):
    repo = tmp_path / "step"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    config = config_with(repo, "step.yaml", {
        "step_distill.enabled": True, "step_distill.steps": [1, 2], "step_distill.rank": 4,
        "step_distill.guidance_min": 2.0, "step_distill.guidance_max": 5.0, "step_distill.latency.rounds": 2,
        "step_distill.unet_targets": ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"],
        "step_distill.train": {"max_steps": 2, "batch_size": 4, "lr": 0.001, "checkpoint_every": 1}})
    run(repo, "--configfile", str(config))
    out = repo / "results" / "smoke"
    assert (out / "models" / "lcm_lora" / "pytorch_lora_weights.safetensors").is_file()
    table = pd.read_parquet(out / "metrics" / "step_distill.parquet")
    students = table[(table["role"] == "student") & (table["metric"] == "accuracy_all")].set_index("model")
    assert list(students.index) == ["lcm_lora_s1", "lcm_lora_s2"]
    assert list(students["baseline"]) == ["teacher_s1", "teacher_s2"] and students["diff_ci_low"].notna().all()
    latency = table[table["metric"] == "latency_ms"]
    assert set(latency["model"]) == {"teacher", "teacher_s1", "teacher_s2", "lcm_lora_s1", "lcm_lora_s2"}
    for name in ("steps", "latency"):
        assert (out / "figures" / f"step_distill_{name}.png").stat().st_size > 0
    manifest = pd.read_parquet(out / "images" / "lcm_lora_s2" / "eval.parquet")
    assert (manifest["scheduler"] == "lcm").all() and (manifest["steps"] == 2).all()
    paper = (out / "paper" / "summary.md").read_text()
    assert "**lcm_lora_s2** (step distillation, 2 steps)" in paper and "### Step distillation" in paper
    assert planned_job_names(repo, "--configfile", str(config)) == set()
