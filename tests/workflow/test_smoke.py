"""config/smoke.yaml through Snakemake: every rule runs, outputs match their schemas, reruns are minimal."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from kd_core.generate import MANIFEST_SCHEMA
from kd_core.io import read_metadata
from kd_core.metrics.distribution import DISTRIBUTION_SCHEMA
from kd_core.metrics.efficiency import EFFICIENCY_SCHEMA
from kd_core.metrics.pairwise import METRICS, PAIRWISE_SCHEMA
from kd_core.metrics.stats import IMPROVEMENT_SCHEMA, SUMMARY_SCHEMA
from kd_core.prompts import PROMPT_SCHEMA

from .conftest import planned_jobs, run

SMOKE = ("--configfile", "config/smoke.yaml")
BK = ("bk_small", "bk_small_nofeat")  # block-distilled students of config/smoke.yaml (the second without feature KD)
MODELS = ("teacher", "base_student", "lora_student", *BK)


def test_smoke_outputs_exist_and_match_schemas(smoke_repo):
    out = smoke_repo / "results" / "smoke"
    for split, n in (("train", 6), ("eval", 4), ("filler", 3)):
        df = pd.read_parquet(out / "prompts" / f"{split}.parquet")
        assert len(df) == n and list(df.columns[: len(PROMPT_SCHEMA)]) == PROMPT_SCHEMA.names
    teacher = pd.read_parquet(out / "images" / "teacher" / "manifest.parquet")
    assert len(teacher) == 13 and set(teacher["split"]) == {"train", "eval", "filler"}
    assert pq.read_schema(out / "images" / "teacher" / "manifest.parquet").names[: len(MANIFEST_SCHEMA)] == MANIFEST_SCHEMA.names
    assert all((out / "images" / "teacher" / f).is_file() for f in teacher["file"])
    student = pd.read_parquet(out / "images" / "base_student" / "manifest.parquet")
    assert len(student) == 7 and set(student["split"]) == {"eval", "filler"}
    assert "code_hash" in read_metadata(out / "images" / "base_student" / "manifest.parquet")
    acc = pd.read_parquet(out / "metrics" / "attribute_accuracy.parquet")
    assert set(acc["model"]) == set(MODELS) and acc["accuracy"].between(0, 1).all()
    assert set(acc.loc[acc["model"] == "teacher", "split"]) == {"train", "eval", "filler"}
    assert (acc.groupby(["model", "split"]).size() == 5).all()
    lora = pd.read_parquet(out / "images" / "lora_student" / "manifest.parquet")
    assert list(lora["file"]) == list(student["file"])
    assert (out / "models" / "lora_student" / "pytorch_lora_weights.safetensors").is_file()
    for bk in BK:  # block-distilled students: eval prompts only, the same files as the base student's eval images
        man = pd.read_parquet(out / "images" / bk / "manifest.parquet")
        assert list(man["file"]) == list(student.loc[student["split"] == "eval", "file"])
        assert (out / "models" / bk / "unet" / "config.json").is_file()
    imp = pd.read_parquet(out / "metrics" / "improvement.parquet")
    assert set(imp["model"]) == {"lora_student", *BK} and {"mse", "ssim", "accuracy_shape", "accuracy_colour"} <= set(imp["metric"])
    assert (imp["ci_low"] <= imp["difference"]).all() and (imp["difference"] <= imp["ci_high"]).all()
    for rule in ("prompts", "world_data", "world_classifier", "toy_pretrain", "generate_teacher", "attribute_summary",
                 "train_lora", "pairwise_lora_student", "improvement", "distribution", "efficiency", "summary", "paper",
                 "figure_metrics", "comparison_grid_teacher", "train_block_kd_bk_small", "generate_bk_small"):
        assert (out / "benchmarks" / f"{rule}.tsv").is_file() and (out / "logs" / f"{rule}.log").is_file()


def test_smoke_evaluation_tables_figures_and_paper(smoke_repo):
    out = smoke_repo / "results" / "smoke"
    schemas = {"pairwise": PAIRWISE_SCHEMA, "summary": SUMMARY_SCHEMA, "distribution": DISTRIBUTION_SCHEMA,
               "efficiency": EFFICIENCY_SCHEMA, "improvement": IMPROVEMENT_SCHEMA}
    for name, schema in schemas.items():
        assert pq.read_schema(out / "metrics" / f"{name}.parquet").names[: len(schema)] == schema.names, name
    pw = pd.read_parquet(out / "metrics" / "pairwise.parquet")
    # 4 eval + 3 filler images per student, every metric
    # (block-distilled students: 4 eval images)
    assert pw.groupby("model").size().to_dict() == {"base_student": 7 * len(METRICS), "lora_student": 7 * len(METRICS),
                                                    **{bk: 4 * len(METRICS) for bk in BK}}
    summary = pd.read_parquet(out / "metrics" / "summary.parquet")
    assert {"ssim", "mse", "accuracy_all", "colour_similarity"} <= set(summary["metric"])
    dist = pd.read_parquet(out / "metrics" / "distribution.parquet")
    assert set(zip(dist["model"], dist["reference"], strict=True)) == {
        ("teacher", "real"), *((m, ref) for m in MODELS[1:] for ref in ("real", "teacher"))}
    assert set(dist["extractor"]) == {"classifier"} and set(dist["n_model"]) == {4} and set(dist["n_reference"]) == {32, 4}
    eff = pd.read_parquet(out / "metrics" / "efficiency.parquet")
    assert set(eff["model"]) == set(MODELS) and (eff["value"] > 0).all()
    params = eff[eff["metric"] == "params_denoiser"].set_index("model")["value"]
    assert params["teacher"] > params["base_student"] == params["lora_student"]  # LoRA fused into the weights
    assert params["teacher"] > params["bk_small"] == params["bk_small_nofeat"]  # blocks removed
    for folder, names in (("figures", ["metric_bars", "radar", "distributions", "distribution_metrics",
                                       "attribute_accuracy", "efficiency", "loss_curves"]),
                          ("comparisons", ["side_by_side", "difference_maps", "grid_teacher", "grid_base_student",
                                           "grid_lora_student"])):
        for name in names:
            assert (out / folder / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
            assert (out / folder / f"{name}.pdf").read_bytes()[:4] == b"%PDF", name
    paper = (out / "paper" / "summary.md").read_text()
    assert "## Headline" in paper and "**lora_student** against **base_student**" in paper
    assert "](../figures/metric_bars.png)" in paper and "](../comparisons/grid_teacher.png)" in paper
    assert {p.name for p in (out / "paper" / "tables").iterdir()} >= {"summary.csv", "summary.md", "summary.tex",
                                                                       "improvement.tex", "efficiency.csv"}


def test_snakemake_report_builds(smoke_repo):
    run(smoke_repo, *SMOKE, "--report", "results/smoke/report.html")
    html = (smoke_repo / "results" / "smoke" / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "metric_bars.png" in html and "2x2 prompt/filler grid" in html


def test_second_run_does_nothing(smoke_repo):
    assert planned_jobs(smoke_repo, *SMOKE) == {}


# Jobs downstream of changed images: every metric, figure and comparison that reads them.
STATS = {"summary": 1, "improvement": 1, "figure_metrics": 1, "figure_efficiency": 1, "paper": 1, "all": 1}
IMAGES = {**STATS, "attribute_summary": 1, "figure_attributes": 1, "distribution": 1, "figure_distribution": 1,
          "pairwise_gather": 1, "comparison_models": 1}


def test_generation_parameter_reruns_generation_and_downstream_only(smoke_repo):
    cfg = (smoke_repo / "config" / "smoke.yaml").read_text()
    changed = smoke_repo / "config" / "smoke_steps.yaml"
    changed.write_text(cfg.replace("generation: {steps: 3, guidance_scale: 4.0, scheduler: ddim, batch_size: 4, device: cpu}\n  base_student",
                                   "generation: {steps: 4, guidance_scale: 4.0, scheduler: ddim, batch_size: 4, device: cpu}\n  base_student"))
    # the teacher's images change, so do the LoRA and block-distilled students trained on them; the base student's do not
    assert planned_jobs(smoke_repo, "--configfile", str(changed)) == {
        **IMAGES, "generate": 4, "attribute_accuracy": 4, "comparison_grid": 2, "pairwise": 4, "train_lora": 1,
        "train_block_kd": 2, "figure_loss": 1, "efficiency": 1}


def _planned_after_edit(repo, module: str) -> dict[str, int]:
    """Planned jobs after appending a comment to ``kd_core/<module>`` (restored afterwards)."""
    path = repo / "kd_core" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        return planned_jobs(repo, *SMOKE)
    finally:
        path.write_text(original)


def test_editing_a_module_reruns_only_its_rules(smoke_repo):
    assert _planned_after_edit(smoke_repo, "world/classifier.py") == {
        **STATS, "world_classifier": 1, "attribute_accuracy": 5, "attribute_summary": 1, "figure_attributes": 1,
        "distribution": 1, "figure_distribution": 1}
    assert _planned_after_edit(smoke_repo, "generate.py") == {
        **IMAGES, "generate": 5, "attribute_accuracy": 5, "comparison_grid": 3, "pairwise": 4, "train_lora": 1,
        "train_block_kd": 2, "figure_loss": 1, "efficiency": 1}
    assert _planned_after_edit(smoke_repo, "train/lora.py") == {
        **IMAGES, "train_lora": 1, "generate": 1, "attribute_accuracy": 1, "comparison_grid": 1, "pairwise": 1,
        "figure_loss": 1, "efficiency": 1}
    # one metric's code: that metric and what reads its table, nothing upstream, no other metric
    assert _planned_after_edit(smoke_repo, "train/block_kd.py") == {
        **IMAGES, "train_block_kd": 2, "generate": 2, "attribute_accuracy": 2, "pairwise": 2, "figure_loss": 1,
        "efficiency": 1}
    assert _planned_after_edit(smoke_repo, "metrics/pairwise.py") == {**STATS, "pairwise": 4, "pairwise_gather": 1}
    assert _planned_after_edit(smoke_repo, "report.py") == {"paper": 1, "all": 1}
    assert planned_jobs(smoke_repo, *SMOKE) == {}


def test_same_config_gives_identical_prompts_and_images(smoke_repo):
    """Prompts and images made again from scratch are identical (CPU, same config and seed)."""
    out = smoke_repo / "results" / "smoke"
    prompts = {s: pd.read_parquet(out / "prompts" / f"{s}.parquet") for s in ("train", "eval", "filler")}
    images = {}
    for model in MODELS:
        man = pd.read_parquet(out / "images" / model / "manifest.parquet")
        images |= {(model, f): np.asarray(Image.open(out / "images" / model / f)) for f in man["file"]}
    shutil.rmtree(out / "prompts")
    shutil.rmtree(out / "images")
    run(smoke_repo, *SMOKE)
    for split, df in prompts.items():
        pd.testing.assert_frame_equal(df, pd.read_parquet(out / "prompts" / f"{split}.parquet"))
    for (model, f), pixels in images.items():
        assert np.array_equal(pixels, np.asarray(Image.open(out / "images" / model / f))), (model, f)
