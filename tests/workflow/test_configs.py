"""Dry runs of the real experiment configs, and bad configs stopped before any job starts."""

from __future__ import annotations

import pytest

from ..conftest import image_folder
from .conftest import ROOT, plan, planned_jobs, run

# The evaluation stage of a study with a teacher, a base student and a LoRA student and a CLIP model.
EVALUATION = {"pairwise": 2, "pairwise_gather": 1, "alignment": 3, "alignment_gather": 1, "distribution": 1,
              "efficiency": 1, "summary": 1, "improvement": 1, "figure_metrics": 1, "figure_distribution": 1,
              "figure_efficiency": 1, "figure_loss": 1, "comparison_models": 1, "paper": 1, "all": 1}

#: Block distillation's table: the step latency of the teacher and one student per level, then the table.
BLOCK_KD_TABLE = {"block_kd_latency": 1, "block_kd_summary": 1}


@pytest.mark.parametrize("name,generate,grids", [("sdxl_to_sd15_dogs", 4, 0), ("sd_turbo_wikiart", 6, 3)])
def test_real_config_dry_run_builds_its_dag(name, generate, grids):
    jobs, text = plan(ROOT, "--configfile", f"config/experiments/{name}.yaml")
    # Hub models: no toy pretraining, no shapes world; a prompt table per split, generation per model
    # and split (teacher train + eval and two students' eval; or three models' eval + filler), LoRA, evaluation.
    assert jobs == {"prompts": 3, "generate": generate, "train_lora": 1, **EVALUATION} | (
        {"comparison_grid": grids} if grids else {})
    assert f"results/{name}/images/teacher/eval.parquet" in text
    assert "gpu=1" in text


@pytest.mark.parametrize("name", ["lcm_lora_sd15", "lcm_lora_sdxl"])
def test_lcm_lora_configs_dry_run_sample_student_and_teacher_at_every_step_count(name):
    jobs, text = plan(ROOT, "--configfile", f"config/experiments/{name}.yaml")
    # the teacher's train and eval images, the base student's, and the student and the teacher at 1, 2, 4, 8 steps
    assert jobs == {"prompts": 3, "generate": 3 + 8, "train_step_distill": 1, **EVALUATION, "pairwise": 9, "alignment": 10,
                    "step_latency": 1, "step_distill_summary": 1, "figure_step_distill": 1}
    for model in ("lcm_lora_s1", "lcm_lora_s8", "teacher_s4"):
        assert f"results/{name}/images/{model}/eval.parquet" in text
    assert "gpu=1" in text


def test_bk_sdm_config_dry_run_trains_every_level_and_its_ablation():
    jobs, text = plan(ROOT, "--configfile", "config/experiments/bk_sdm_sd15.yaml")
    # teacher (train and eval splits), the published BK-SDM-Small, and 3 levels x (with, without feature KD)
    assert jobs == {"prompts": 3, "generate": 9, "train_block_kd": 6, **EVALUATION, "pairwise": 7, "alignment": 8, **BLOCK_KD_TABLE}
    assert "results/bk_sdm_sd15/models/bk_tiny_nofeat" in text and "gpu=1" in text


def test_ssd_1b_config_dry_run_trains_both_sdxl_students_and_their_ablations():
    jobs, text = plan(ROOT, "--configfile", "config/experiments/ssd_1b.yaml")
    # teacher (train and eval splits), the published SSD-1B, and 2 levels x (with, without feature KD)
    assert jobs == {"prompts": 3, "generate": 7, "train_block_kd": 4, **EVALUATION, "pairwise": 5, "alignment": 6, **BLOCK_KD_TABLE}
    assert "results/ssd_1b/models/koala_700m_nofeat" in text and "gpu=1" in text


def test_shapes_sdxl_config_dry_run_trains_the_sdxl_style_teacher_and_its_students(tmp_path):
    jobs, text = plan(ROOT, "--directory", str(tmp_path), "--configfile", str(ROOT / "config/experiments/shapes_sdxl.yaml"))
    # the toy base, the SDXL-style teacher beside the base student (not the SD-layout toy teacher),
    # LoRA on the base student, 2 SDXL levels x (with, without feature KD)
    assert jobs["toy_teacher_xl"] == 1 and jobs["toy_unet"] == 1 and jobs["toy_base"] == 1
    assert jobs["train_lora"] == 1 and jobs["train_block_kd"] == 4 and "train_width_student" not in jobs
    assert jobs["block_kd_latency"] == jobs["block_kd_summary"] == 1 and "dmkd_student" not in jobs
    assert "results/shapes_sdxl/models/toy_teacher_xl" in text and "role=student" in text and "role=teacher" not in text
    assert "results/shapes_sdxl/models/koala_700m_nofeat" in text


def test_dmkd_cifar10_config_dry_run(tmp_path):
    """The CIFAR-10 DM-KD study: teacher, 3 guidance scales x (KD, hard labels), 2 set sizes x 2, the real-data student."""
    for split in ("train", "test"):
        image_folder(tmp_path / "cifar10" / split, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
    text = (ROOT / "config" / "experiments" / "dmkd_cifar10.yaml").read_text()
    cfg = tmp_path / "dmkd_cifar10.yaml"
    cfg.write_text(text.replace("real: data/cifar10", f"real: {tmp_path / 'cifar10'}"))
    jobs, out = plan(ROOT, "--configfile", str(cfg))
    assert jobs == {"dmkd_prompts": 1, "dmkd_generate": 3, "dmkd_teacher": 1, "dmkd_student": 33, "dmkd_summary": 1,
                    "figure_dmkd": 1, "paper": 1, "all": 1}
    assert "results/dmkd_cifar10/dmkd/synthetic/g7p5/manifest.parquet" in out and "gpu=1" in out


def test_size_study_cifar10_config_dry_run(tmp_path, monkeypatch):
    """The CIFAR-10 size study: a pixel DDPM teacher from the folder, 4 width students, their analyses."""
    for split in ("train", "test"):
        image_folder(tmp_path / "cifar10" / split, ["cat"])
    text = (ROOT / "config" / "experiments" / "size_study_cifar10.yaml").read_text()
    cfg = tmp_path / "size_study_cifar10.yaml"
    cfg.write_text(text.replace("data/cifar10", str(tmp_path / "cifar10")))
    jobs, out = plan(ROOT, "--configfile", str(cfg))
    assert jobs == {"prompts": 3, "train_ddpm": 1, "generate": 6, "train_width_student": 4, "timestep_mse": 1,
                    "trajectory": 1, "size_latency": 1, "size_study_summary": 1, "figure_size_study": 1, "pairwise": 4, "pairwise_gather": 1,
                    "distribution": 1, "efficiency": 1, "summary": 1, "figure_metrics": 1, "figure_distribution": 1,
                    "figure_efficiency": 1, "figure_loss": 1, "comparison_models": 1, "paper": 1, "all": 1}
    assert "results/size_study_cifar10/models/ddpm_teacher" in out and "results/size_study_cifar10/models/w0p25" in out
    # no grammar: the prompt tables are the sample counts, an empty prompt and a seed each
    from kd_core.check import check
    from kd_core.config import build
    from kd_core.prompts import PromptConfig, synthesize_split

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # its CLIP hub id is not in this machine's cache
    prompts = build(PromptConfig, check([str(cfg)], schema=ROOT / "config/schema.yaml")["prompts"])
    train = synthesize_split(prompts, "train")
    assert len(train) == 5000 and set(train["prompt"]) == {""} and train["seed"].is_unique
    assert "gpu=1" in out
    missing = cfg.with_name("missing.yaml")
    missing.write_text(text.replace("data/cifar10/train", "/nonexistent/cifar10/train"))
    bad = run(ROOT, "-n", "--configfile", str(missing), check=False)
    assert bad.returncode != 0
    assert "config error: config key 'ddpm_teacher.data': image folder /nonexistent/cifar10/train does not exist" in bad.stderr
    # a latent DDPM on the shapes world's autoencoder: trained after the toy models that hold it
    latent = cfg.with_name("latent.yaml")
    latent.write_text(cfg.read_text().replace("world: {enabled: false}", "world: {enabled: true}")
                      .replace("grammar: null", "grammar: shapes").replace("n_train: 5000", "n_train: 250")
                      .replace("n_eval: 1000", "n_eval: 50")
                      .replace("ddpm_teacher:\n", "ddpm_teacher:\n  vae: toy:teacher\n"))
    jobs, out = plan(ROOT, "--configfile", str(latent))
    assert jobs["toy_base"] == 1 and jobs["toy_unet"] == 1 and jobs["train_ddpm"] == 1  # the teacher holds the VAE
    block = out[out.index("rule train_ddpm:"):].split("\n\n")[0]
    assert "input: results/size_study_cifar10/models/toy_teacher" in block


def test_tiny_config_dry_run_builds_tiny_models():
    jobs = planned_jobs(ROOT, "--configfile", "config/tiny.yaml")
    assert jobs == {"prompts": 3, "tiny_model": 3, "generate": 6, "train_lora": 1, "comparison_grid": 2, **EVALUATION}


@pytest.mark.parametrize("name", ["config", "paper"])
def test_shipped_shapes_configs_plan_every_study_through_snakemake(tmp_path, name):
    """config/config.yaml (the demo) and config/paper.yaml, dry-run by Snakemake in an empty folder: the
    jobs of every study, counted from the file's own settings."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    jobs, text = plan(ROOT, "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / f"{name}.yaml"))
    dmkd, size, bk = cfg["dmkd"], cfg["size_study"], cfg["block_kd"]
    synthetic = len(dmkd["synthetic"]["guidance"]) + len(dmkd["synthetic"]["fractions"])  # subsets: of the main set
    inits = 2 if size.get("compare_init") else 1  # paper.yaml: every width from both initialisations
    step = cfg.get("step_distill", {"enabled": False})
    full = cfg["models"]["teacher"]["generation"]["steps"]
    step_models = [*(f"{step['method']}_s{n}" for n in step["steps"]), *(f"teacher_s{n}" for n in step["steps"] if n != full)
                   ] if step["enabled"] else []
    students = ["base_student", "lora_student", *(f"{lv}{s}" for lv in bk["levels"] for s in ("", "_nofeat")),
                *(f"w{f:g}".replace(".", "p") for f in size["factors"] for _ in range(inits)), *step_models]
    assert jobs == {
        "prompts": 3, "world_data": 2, "toy_base": 1, "toy_unet": 2, "world_classifier": 1,
        "generate": 3 + 2 + 2 + (len(students) - 2),  # teacher train/eval/filler; base and LoRA eval/filler; the rest eval
        "comparison_grid": 3, "pairwise": len(students), "train_lora": 1, "train_block_kd": len(bk["levels"]) * 2,
        "train_width_student": len(size["factors"]) * inits, "dmkd_prompts": 1, "dmkd_teacher": 1,
        "dmkd_generate": len(dmkd["synthetic"]["guidance"]), "dmkd_student": len(dmkd["seeds"]) * (1 + 2 * synthetic),
        **{rule: 1 for rule in ("dmkd_summary", "figure_dmkd", "efficiency", "figure_loss", "size_latency", "timestep_mse",
                                *BLOCK_KD_TABLE,
                                "trajectory", "attribute_accuracy", "comparison_models", "distribution", "attribute_summary",
                                "figure_distribution", "pairwise_gather", "size_study_summary", "figure_attributes",
                                "figure_size_study", "improvement", "summary", "figure_efficiency", "figure_metrics",
                                "paper", "all")},
        **({rule: 1 for rule in ("train_step_distill", "step_latency", "step_distill_summary", "figure_step_distill")}
           if step["enabled"] else {})}
    for model in students:
        assert f"results/{cfg['experiment']}/images/{model}/eval.parquet" in text
