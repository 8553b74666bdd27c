"""What reruns when you change what: the rerun matrix of the README on the finished smoke run.

Each routine edit of config/smoke.yaml schedules exactly the jobs that read what it changed, named
by rule and wildcards; one edit that touches only evaluation is run for real, and nothing upstream
of it is rewritten or trained again.
"""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from .conftest import config_with, planned_job_names, run

pytestmark = pytest.mark.workflow

STUDENTS = ("base_student", "lora_student", "bk_small", "bk_small_nofeat", "w0p5", "w1")
MODELS = ("teacher", *STUDENTS)


def gen(model: str, split: str = "eval") -> str:
    return f"generate[model={model},split={split}]"


def pairwise(*models: str) -> set[str]:
    return {f"pairwise[model={m}]" for m in models}


def grids(*models: str) -> set[str]:
    return {f"comparison_grid[model={m}]" for m in models}


END = {"paper", "all"}  # the paper records the whole config: every edit remakes it (seconds)
SIZE_SUMMARY = {"size_study_summary", "figure_size_study"}
STATS = {"summary", "improvement", "figure_metrics", "figure_efficiency", "block_kd_summary", *SIZE_SUMMARY, *END}
# what one model's new eval images rerun besides its own generation and pairwise job: every
# evaluation over all models (one job each), the statistics and their figures
ALL_MODELS_EVAL = {"attribute_accuracy", "attribute_summary", "figure_attributes", "distribution",
                   "figure_distribution", "pairwise_gather", "comparison_models", *STATS}
NEW_WEIGHTS = {"efficiency", "figure_loss"}  # a trained model changed: its cost and the loss curves
DMKD_RUNS = ("real_ce", "g2_kd", "g2_ce", "g2_f50_kd", "g2_f50_ce")
STEP_MODELS = ("lcm_lora_s1", "lcm_lora_s2", "teacher_s1", "teacher_s2")  # the smoke teacher samples with 3 steps

MATRIX: dict[str, tuple[dict, set[str]]] = {
    # the five edits that reran every training before
    "more eval prompts": ({"prompts.n_eval": 5}, {
        "prompts[split=eval]", *(gen(m) for m in MODELS), *pairwise(*STUDENTS), *ALL_MODELS_EVAL,
        *grids("teacher", "base_student", "lora_student"), "timestep_mse", "trajectory"}),
    "more filler prompts": ({"prompts.n_filler": 4}, {
        "prompts[split=filler]", *(gen(m, "filler") for m in ("teacher", "base_student", "lora_student")),
        *grids("teacher", "base_student", "lora_student"), *END}),
    "classifier steps": ({"world.classifier.steps": 12}, {
        "world_classifier", "attribute_accuracy", "attribute_summary", "figure_attributes", "distribution",
        "figure_distribution", *STATS}),
    "a block-KD level added": ({"block_kd.levels": ["bk_small", "bk_base"]}, {
        "train_block_kd[bk=bk_base]", "train_block_kd[bk=bk_base_nofeat]", gen("bk_base"), gen("bk_base_nofeat"),
        *pairwise("bk_base", "bk_base_nofeat"), *ALL_MODELS_EVAL, *NEW_WEIGHTS, "block_kd_latency"}),
    "latency rounds": ({"size_study.latency.rounds": 4}, {"size_latency", *SIZE_SUMMARY, *END}),
    # routine edits of a researcher
    "teacher sampler steps": ({"models.teacher.generation.steps": 4}, {
        *(gen("teacher", s) for s in ("train", "eval", "filler")), "train_lora", gen("lora_student"),
        gen("lora_student", "filler"), *(f"train_block_kd[bk={b}]" for b in ("bk_small", "bk_small_nofeat")),
        *(f"train_width_student[width_student={w}]" for w in ("w0p5", "w1")), *(gen(m) for m in STUDENTS[2:]),
        *pairwise(*STUDENTS), *grids("teacher", "lora_student"), *ALL_MODELS_EVAL, *NEW_WEIGHTS,
        "size_latency", "timestep_mse", "trajectory", "block_kd_latency"}),
    "student sampler steps": ({"models.base_student.generation.steps": 4}, {
        *(gen(m, s) for m in ("base_student", "lora_student") for s in ("eval", "filler")),
        *pairwise("base_student", "lora_student"), *grids("base_student", "lora_student"), *ALL_MODELS_EVAL,
        "efficiency"}),
    "teacher sampling batch size": ({"models.teacher.generation.batch_size": 2}, END),
    "DM-KD sampling batch size": ({"dmkd.synthetic.generation.batch_size": 6}, END),
    "LoRA rank": ({"lora.rank": 2}, {
        "train_lora", gen("lora_student"), gen("lora_student", "filler"), *pairwise("lora_student"),
        *grids("lora_student"), *ALL_MODELS_EVAL, *NEW_WEIGHTS}),
    "LoRA learning rate": ({"lora.train.lr": 0.002}, {
        "train_lora", gen("lora_student"), gen("lora_student", "filler"), *pairwise("lora_student"),
        *grids("lora_student"), *ALL_MODELS_EVAL, *NEW_WEIGHTS}),
    "feature-KD weight": ({"block_kd.w_feat": 0.5}, {
        *(f"train_block_kd[bk={b}]" for b in ("bk_small", "bk_small_nofeat")), gen("bk_small"), gen("bk_small_nofeat"),
        *pairwise("bk_small", "bk_small_nofeat"), *ALL_MODELS_EVAL, *NEW_WEIGHTS, "block_kd_latency"}),
    "width students from random weights": ({"size_study.init": "random"}, {
        *(f"train_width_student[width_student={w}]" for w in ("w0p5", "w1")), gen("w0p5"), gen("w1"),
        *pairwise("w0p5", "w1"), *ALL_MODELS_EVAL, *NEW_WEIGHTS, "size_latency", "timestep_mse", "trajectory"}),
    "width students from both initialisations": ({"size_study.compare_init": True}, {
        *(f"train_width_student[width_student={w}]" for w in ("w0p5_random", "w1_random")), gen("w0p5_random"),
        gen("w1_random"), *pairwise("w0p5_random", "w1_random"), *ALL_MODELS_EVAL, *NEW_WEIGHTS}),
    "a width factor added": ({"size_study.factors": [0.5, 0.75, 1.0]}, {
        "train_width_student[width_student=w0p75]", gen("w0p75"), *pairwise("w0p75"), *ALL_MODELS_EVAL,
        *NEW_WEIGHTS, "size_latency", "timestep_mse", "trajectory"}),
    "base student's toy training": ({"world.toy.student.steps": 6}, {
        "toy_unet[role=student]", "train_lora",
        *(gen(m, s) for m in ("base_student", "lora_student") for s in ("eval", "filler")),
        *pairwise("base_student", "lora_student"), *grids("base_student", "lora_student"), *ALL_MODELS_EVAL,
        *NEW_WEIGHTS}),
    "a DM-KD seed added": ({"dmkd.seeds": [0, 1, 2]}, {
        *(f"dmkd_student[dmkd_run={r}_s2]" for r in DMKD_RUNS), "dmkd_summary", "figure_dmkd", *END}),
    "DM-KD student epochs": ({"dmkd.student_train.epochs": 3}, {
        *(f"dmkd_student[dmkd_run={r}_s{s}]" for r in DMKD_RUNS for s in (0, 1)), "dmkd_summary", "figure_dmkd", *END}),
    "DM-KD off": ({"dmkd.enabled": False}, END),
    "FID bootstrap count": ({"metrics.features.bootstrap": 6}, {"distribution", "figure_distribution", *SIZE_SUMMARY, *END}),
    "CI bootstrap count": ({"metrics.bootstrap": 100}, {
        *STATS, "attribute_summary", "figure_attributes", "dmkd_summary", "figure_dmkd", "size_latency", "timestep_mse",
        "trajectory", "block_kd_latency"}),
    "efficiency repeats": ({"metrics.efficiency.repeats": 3}, {"efficiency", "figure_efficiency", *SIZE_SUMMARY, *END}),
    "images compared side by side": ({"metrics.figures.n_compare": 3}, {"comparison_models", *END}),
    "trajectory steps": ({"size_study.trajectory.steps": 4}, {"trajectory", *SIZE_SUMMARY, *END}),
    "timestep buckets": ({"size_study.timestep_mse.buckets": 2}, {"timestep_mse", *SIZE_SUMMARY, *END}),
    "step distillation on": ({"step_distill.enabled": True, "step_distill.steps": [1, 2]}, {
        "train_step_distill", *(gen(m) for m in STEP_MODELS), *pairwise(*STEP_MODELS), *ALL_MODELS_EVAL, *NEW_WEIGHTS,
        "step_latency", "step_distill_summary", "figure_step_distill"}),
}


@pytest.mark.parametrize("edit", MATRIX)
def test_an_edit_schedules_exactly_the_jobs_that_read_it(smoke_repo, edit):
    changes, expected = MATRIX[edit]
    config = config_with(smoke_repo, f"rerun_{edit.replace(' ', '_')}.yaml", changes)
    assert planned_job_names(smoke_repo, "--configfile", str(config)) == expected


def test_the_order_of_keys_in_a_config_file_reruns_nothing(smoke_repo):
    text = (smoke_repo / "config" / "smoke.yaml").read_text().replace(
        "vae: {channels: [8, 16, 16], steps: 5, batch_size: 8}", "vae: {batch_size: 8, steps: 5, channels: [8, 16, 16]}")
    (smoke_repo / "config" / "reordered.yaml").write_text(text)
    assert "batch_size: 8, steps: 5" in text
    assert planned_job_names(smoke_repo, "--configfile", "config/reordered.yaml") == set()


@pytest.mark.slow  # ~70 s: the dry runs above check the same plan in the default tier
def test_more_eval_prompts_for_real_leave_training_and_its_data_untouched(smoke_repo, tmp_path):
    """Run for real: the train prompts, the teacher's train images and every checkpoint keep their
    bytes and times, no trainer runs or starts afresh, and the eval tables grow by the new prompt."""
    repo = tmp_path / "edit"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    out = repo / "results" / "smoke"
    kept = [out / "prompts" / "train.parquet", out / "images" / "teacher" / "train.parquet",
            *sorted((out / "train").glob("*/checkpoints/*/trainer.json")), *sorted((out / "models").glob("*/*.safetensors"))]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept}
    assert len(before) > 10
    logs = {p.name: p.read_text() for p in (out / "logs").glob("*.log")}
    config = config_with(repo, "more_eval.yaml", {"prompts.n_eval": 5})
    run(repo, "--configfile", str(config))
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept} == before
    changed = {p.name for p in (out / "logs").glob("*.log") if logs.get(p.name) != p.read_text()}
    assert changed and not {n for n in changed if n.startswith(("train_", "toy_", "dmkd_", "world_"))}, changed
    assert not any("starting afresh" in (out / "logs" / n).read_text() for n in changed)
    for model in MODELS:
        assert len(pd.read_parquet(out / "images" / model / "eval.parquet")) == 5
    pairs = pd.read_parquet(out / "metrics" / "pairwise.parquet")
    assert pairs.groupby("model")["prompt_id"].nunique().eq(5).all()
    assert planned_job_names(repo, "--configfile", str(config)) == set()


TRAINED_ON_TEACHER = {"train_lora", *(f"train_block_kd[bk={b}]" for b in ("bk_small", "bk_small_nofeat")),
                      *(f"train_width_student[width_student={w}]" for w in ("w0p5", "w1"))}
SIZE_ANALYSES = {"size_latency", "timestep_mse", "trajectory"}

# A comment appended to one kd_core module: the jobs whose adapter imports it, directly or not, and
# what reads their outputs; nothing else.
CODE_EDITS: dict[str, set[str]] = {
    "world/classifier.py": MATRIX["classifier steps"][1],
    "train/lora.py": MATRIX["LoRA rank"][1],
    "train/block_kd.py": MATRIX["feature-KD weight"][1],
    "train/size_study.py": {
        *(f"train_width_student[width_student={w}]" for w in ("w0p5", "w1")), gen("w0p5"), gen("w1"),
        *pairwise("w0p5", "w1"), *ALL_MODELS_EVAL, *NEW_WEIGHTS, *SIZE_ANALYSES},
    "generate.py": {
        *(gen(m, s) for m in ("teacher", "base_student", "lora_student") for s in ("eval", "filler")),
        gen("teacher", "train"), *(gen(m) for m in STUDENTS[2:]), *TRAINED_ON_TEACHER, *pairwise(*STUDENTS),
        *grids("teacher", "base_student", "lora_student"), *ALL_MODELS_EVAL, *NEW_WEIGHTS, *SIZE_ANALYSES,
        "block_kd_latency", "dmkd_generate[dmkd_set=g2]", *(f"dmkd_student[dmkd_run={r}_s{s}]" for r in DMKD_RUNS[1:] for s in (0, 1)),
        "dmkd_summary", "figure_dmkd"},
    "metrics/pairwise.py": {*pairwise(*STUDENTS), "pairwise_gather", *(STATS - SIZE_SUMMARY)},
    "train/classifier.py": {"dmkd_teacher", *(f"dmkd_student[dmkd_run={r}_s{s}]" for r in DMKD_RUNS for s in (0, 1)),
                            "dmkd_summary", "figure_dmkd", *END},
    "report.py": END,
}


@pytest.mark.parametrize("module", CODE_EDITS)
def test_a_code_edit_reruns_the_jobs_that_import_it(smoke_repo, module):
    path = smoke_repo / "kd_core" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        assert planned_job_names(smoke_repo, "--configfile", "config/smoke.yaml") == CODE_EDITS[module]
    finally:
        path.write_text(original)
    assert planned_job_names(smoke_repo, "--configfile", "config/smoke.yaml") == set()


@pytest.mark.slow
def test_identical_bytes_rewritten_restart_nothing(smoke_repo, tmp_path):
    """The toy teacher's folder re-exported with the same bytes (every file new, new times): Snakemake
    schedules everything downstream (a model folder is compared by time), and every trainer resumes
    at its last step, every model is written with the same bytes and every image is reused (identity
    by content: kd_core.digests). (Small files such as manifests Snakemake itself compares by checksum.)"""
    repo = tmp_path / "reexported"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    out = repo / "results" / "smoke"
    images = {p: p.stat().st_mtime_ns for p in (out / "images").glob("*/*.png")}
    weights = {p: p.read_bytes() for p in (out / "models").rglob("*.safetensors")}
    teacher = out / "models" / "toy_teacher"
    shutil.copytree(teacher, teacher.with_name("exported"), copy_function=shutil.copyfile)  # new files, same bytes
    shutil.rmtree(teacher)
    teacher.with_name("exported").rename(teacher)
    for path in (teacher, *teacher.rglob("*")):
        os.utime(path)  # written now, as an export would be
    planned = planned_job_names(repo, "--configfile", "config/smoke.yaml")
    assert TRAINED_ON_TEACHER | {gen("teacher", s) for s in ("train", "eval", "filler")} <= planned
    run(repo, "--configfile", "config/smoke.yaml")
    for job in ("train_lora", "train_block_kd_bk_small", "train_block_kd_bk_small_nofeat",
                "train_width_student_w0p5", "train_width_student_w1"):
        log = (out / "logs" / f"{job}.log").read_text()
        assert "resuming from" in log and "starting afresh" not in log, job
    assert {p: p.read_bytes() for p in weights} == weights
    assert {p: p.stat().st_mtime_ns for p in images} == images


@pytest.mark.slow  # ~40 s: one width student trained for real
def test_a_width_student_of_the_other_initialisation_trains_from_it(smoke_repo, tmp_path):
    """size_study.compare_init on the finished smoke run: w1_random trains from random weights (its
    first output-KD term is far from 0) where w1, from the teacher's channels, starts at 0."""
    repo = tmp_path / "compare"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    config = config_with(repo, "compare.yaml", {"size_study.compare_init": True})
    run(repo, "results/smoke/models/w1_random", "--configfile", str(config))  # targets before --configfile
    out = repo / "results" / "smoke"
    info = json.loads((out / "models" / "w1_random" / "size_study.json").read_text())
    assert info["size_study"]["init"] == "random" and info["size_study"]["factor"] == 1.0

    def first_out_kd(model):
        loss = pd.read_parquet(out / "train" / model / "loss.parquet")
        return loss[(loss["split"] == "train") & (loss["step"] == 1) & (loss["term"] == "out_kd")]["value"].item()

    assert first_out_kd("w1") < 1e-10 < 1e-3 < first_out_kd("w1_random")
