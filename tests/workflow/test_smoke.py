"""config/smoke.yaml through Snakemake: every rule runs, outputs match their schemas, reruns are minimal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from kd_core.generate import MANIFEST_SCHEMA
from kd_core.io import read_metadata
from kd_core.metrics.distribution import DISTRIBUTION_SCHEMA
from kd_core.metrics.dmkd import DMKD_SCHEMA
from kd_core.metrics.efficiency import EFFICIENCY_SCHEMA
from kd_core.metrics.pairwise import METRICS, PAIRWISE_SCHEMA
from kd_core.metrics.stats import IMPROVEMENT_SCHEMA, SUMMARY_SCHEMA
from kd_core.metrics.timestep import TIMESTEP_SCHEMA
from kd_core.prompts import PROMPT_SCHEMA

from .conftest import planned_jobs, run

pytestmark = pytest.mark.workflow  # runs Snakemake end to end

SMOKE = ("--configfile", "config/smoke.yaml")
BK = ("bk_small", "bk_small_nofeat")  # block-distilled students of config/smoke.yaml (the second without feature KD)
WIDTH = ("w0p5", "w1")  # width students of the model-size study (factors 0.5, 1.0)
MODELS = ("teacher", "base_student", "lora_student", *BK, *WIDTH)


def test_lora_student_images_are_the_base_student_sampled_with_its_adapter(smoke_repo, tmp_path, monkeypatch):
    """Sampled again here as the manifest records (the eval prompts, in the same batches): with the
    adapter, the LoRA student's images to the byte; without it, the base student's; and the two
    differ (the adapter trained)."""
    from kd_core.config import build
    from kd_core.generate import GenerationConfig, generate_images

    monkeypatch.chdir(smoke_repo)  # the manifest's paths are relative to the run's folder
    images = smoke_repo / "results" / "smoke" / "images"
    prompts = pd.read_parquet(smoke_repo / "results" / "smoke" / "prompts" / "eval.parquet")
    meta = read_metadata(images / "lora_student" / "eval.parquet")
    cfg = build(GenerationConfig, meta["config"])
    assert cfg.lora and meta["settings"]["source"].endswith("models/toy_student")
    pixels, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as the smoke run's sampling jobs (a LoRA layer's sums depend on the thread count)
    try:
        for name, lora in (("with", cfg.lora), ("without", None)):
            man = generate_images(meta["settings"]["source"], prompts, tmp_path / name,
                                  build(GenerationConfig, meta["config"], lora=lora), name, name="eval")
            pixels[name] = np.stack([np.asarray(Image.open(tmp_path / name / f)) for f in man["file"]])
    finally:
        torch.set_num_threads(threads)
    made = {m: np.stack([np.asarray(Image.open(images / m / f)) for f in pd.read_parquet(images / m / "eval.parquet")["file"]])
            for m in ("lora_student", "base_student")}
    assert np.array_equal(pixels["with"], made["lora_student"]) and np.array_equal(pixels["without"], made["base_student"])
    assert not np.array_equal(made["lora_student"], made["base_student"])


def test_smoke_outputs_exist_and_match_schemas(smoke_repo):
    out = smoke_repo / "results" / "smoke"
    for split, n in (("train", 6), ("eval", 4), ("filler", 3)):
        df = pd.read_parquet(out / "prompts" / f"{split}.parquet")
        assert len(df) == n and list(df.columns[: len(PROMPT_SCHEMA)]) == PROMPT_SCHEMA.names
    images = out / "images"
    for split, n in (("train", 6), ("eval", 4), ("filler", 3)):  # one manifest per split, each its own job
        teacher = pd.read_parquet(images / "teacher" / f"{split}.parquet")
        assert len(teacher) == n and set(teacher["split"]) == {split}
        assert pq.read_schema(images / "teacher" / f"{split}.parquet").names[: len(MANIFEST_SCHEMA)] == MANIFEST_SCHEMA.names
        assert all((images / "teacher" / f).is_file() for f in teacher["file"])
    assert sorted(p.name for p in (images / "base_student").glob("[!.]*.parquet")) == ["eval.parquet", "filler.parquet"]
    student = pd.read_parquet(images / "base_student" / "eval.parquet")
    assert len(student) == 4 and "code_hash" in read_metadata(images / "base_student" / "eval.parquet")
    acc = pd.read_parquet(out / "metrics" / "attribute_accuracy.parquet")
    assert set(acc["model"]) == set(MODELS) and acc["accuracy"].between(0, 1).all()
    assert set(acc["split"]) == {"eval"} and (acc.groupby("model").size() == 5).all()  # the evaluation: eval images
    lora = pd.read_parquet(images / "lora_student" / "eval.parquet")
    assert list(lora["file"]) == list(student["file"])
    assert (out / "models" / "lora_student" / "pytorch_lora_weights.safetensors").is_file()
    for bk in BK:  # block-distilled students: eval prompts only, the same files as the base student's eval images
        man = pd.read_parquet(images / bk / "eval.parquet")
        assert list(man["file"]) == list(student["file"]) and not (images / bk / "filler.parquet").exists()
        assert (out / "models" / bk / "unet" / "config.json").is_file()
    table = pd.read_parquet(out / "metrics" / "block_kd.parquet")  # the study's table: each baseline, size and latency
    acc = table[table["metric"] == "accuracy_all"]
    assert set(acc.loc[acc["model"] == "bk_small", "baseline"]) == {"", "teacher", "base_student", "bk_small_nofeat"}
    cost = table[table["metric"] == "step_ms_ratio_teacher"].set_index("model")
    assert set(cost.index) == set(BK) and (cost["ci_low"] <= cost["mean"]).all() and (cost["mean"] <= cost["ci_high"]).all()
    imp = pd.read_parquet(out / "metrics" / "improvement.parquet")
    assert set(imp["model"]) == {"lora_student", *BK, *WIDTH} and {"mse", "ssim", "accuracy_shape", "accuracy_colour"} <= set(imp["metric"])
    assert (imp["ci_low"] <= imp["difference"]).all() and (imp["difference"] <= imp["ci_high"]).all()
    for rule in ("prompts_train", "prompts_eval", "prompts_filler", "world_data_train", "world_data_test",
                 "world_classifier", "toy_base",
                 "toy_unet_teacher", "toy_unet_student", "generate_teacher_train", "generate_teacher_filler",
                 "attribute_summary", "train_lora", "pairwise_lora_student", "improvement", "distribution", "efficiency",
                 "summary", "paper", "figure_metrics", "comparison_grid_teacher", "train_block_kd_bk_small",
                 "generate_bk_small_eval", "block_kd_latency", "block_kd_summary",
                 "train_width_student_w0p5", "timestep_mse", "trajectory", "size_latency", "size_study_summary", "figure_size_study",
                 "dmkd_prompts", "dmkd_generate_g2", "dmkd_teacher", "dmkd_student_g2_kd_s0", "dmkd_student_g2_kd_s1", "dmkd_summary", "figure_dmkd"):
        assert (out / "benchmarks" / f"{rule}.tsv").is_file() and (out / "logs" / f"{rule}.log").is_file()


def test_smoke_dmkd_study(smoke_repo):
    out = smoke_repo / "results" / "smoke"
    synthetic = pd.read_parquet(out / "dmkd" / "synthetic" / "g2" / "manifest.parquet")
    # 6 class prompts per shape, generated by the toy teacher at guidance 2
    assert len(synthetic) == 24 and synthetic.groupby("label").size().tolist() == [6] * 4
    assert set(synthetic["guidance_scale"]) == {2.0} and (synthetic["label"] == synthetic["shape"]).all()
    table = pd.read_parquet(out / "metrics" / "dmkd.parquet")
    assert pq.read_schema(out / "metrics" / "dmkd.parquet").names == DMKD_SCHEMA.names
    assert list(table["run"]) == ["teacher", "real_ce", "g2_kd", "g2_ce", "g2_f50_kd", "g2_f50_ce"]
    assert set(table["n_test"]) == {32} and table["accuracy"].between(0, 1).all()
    # two training seeds per student run (the teacher is trained once); the row is their mean
    assert table["n_seeds"].tolist() == [1] + [2] * 5
    for name in table["run"][1:]:
        seeds = [pd.read_parquet(out / "metrics" / "dmkd" / f"{name}_s{s}.parquet")["correct"].mean() for s in (0, 1)]
        assert table.set_index("run").loc[name, "accuracy"] == pytest.approx(np.mean(seeds))
    kd = table.set_index("run").loc["g2_kd"]
    assert kd["baseline"] == "g2_ce" and kd["n_train"] == 24 and kd["diff_ci_low"] <= kd["difference"] <= kd["diff_ci_high"]
    assert table.set_index("run").loc["g2_f50_kd", "n_train"] == 12
    teacher = out / "models" / "dmkd_teacher"
    assert (teacher / "model.safetensors").is_file() and "ResNetForImageClassification" in (teacher / "config.json").read_text()
    loss = pd.read_parquet(out / "train" / "dmkd_g2_kd_s0" / "loss.parquet")
    assert {"out_kd", "task"} <= set(loss["term"]) and set(loss["split"]) == {"train", "val", "test"}
    paper = (out / "paper" / "summary.md").read_text()
    assert "**g2_kd** (DM-KD, 24 synthetic images)" in paper and "](../figures/dmkd_accuracy.png)" in paper


def test_smoke_size_study(smoke_repo):
    out = smoke_repo / "results" / "smoke"
    teacher_unet = json.loads((out / "models" / "toy_teacher" / "unet" / "config.json").read_text())
    half = json.loads((out / "models" / "w0p5" / "unet" / "config.json").read_text())
    assert half["block_out_channels"] == [c // 2 for c in teacher_unet["block_out_channels"]]
    assert json.loads((out / "models" / "w0p5" / "size_study.json").read_text())["size_study"]["factor"] == 0.5
    ts = pd.read_parquet(out / "metrics" / "timestep_mse.parquet")
    assert pq.read_schema(out / "metrics" / "timestep_mse.parquet").names == TIMESTEP_SCHEMA.names
    assert set(ts["model"]) == {"teacher", *WIDTH} and set(ts["bucket"]) == {-1, 0, 1, 2} and set(ts["n"]) == {4}
    assert (ts.loc[ts["target"] == "teacher", "mse"] > 0).all()
    traj = pd.read_parquet(out / "metrics" / "trajectory.parquet")
    assert set(traj["model"]) == set(WIDTH) and set(traj["step"]) == {0, 1, 2} and set(traj["quantity"]) == {"latent", "x0"}
    size = pd.read_parquet(out / "metrics" / "size_study.parquet").set_index("model")
    assert list(size.index) == ["teacher", *WIDTH] and list(size["factor"]) == [1.0, 0.5, 1.0]
    assert size.loc["w1", "params"] == size.loc["teacher", "params"] > size.loc["w0p5", "params"]
    assert (size["latency_per_image_ms"] > 0).all() and size["fid"].notna().all()
    lat = pd.read_parquet(out / "metrics" / "size_latency.parquet")
    assert set(lat["model"]) == {"teacher", *WIDTH} and set(lat["batch_size"]) == {1, 2} and set(lat["rounds"]) == {3}
    assert (size["step_ms"] > 0).all() and size.loc["w0p5", "gflops_per_step"] < size.loc["w1", "gflops_per_step"]
    assert size.loc["w1", "gflops_per_step"] == size.loc["teacher", "gflops_per_step"]
    paper = (out / "paper" / "summary.md").read_text()
    assert ("**Model size** (2 width students, each started from the teacher's most important channels): "
            "attribute accuracy x0.5 ") in paper and "](../figures/size_heatmap.png)" in paper
    assert size["accuracy"].between(0, 1).all() and (size["accuracy_ci_low"] <= size["accuracy_ci_high"]).all()
    assert planned_jobs(smoke_repo, "size_study", *SMOKE) == {}  # the named target: all done


def test_smoke_evaluation_tables_figures_and_paper(smoke_repo):
    out = smoke_repo / "results" / "smoke"
    schemas = {"pairwise": PAIRWISE_SCHEMA, "summary": SUMMARY_SCHEMA, "distribution": DISTRIBUTION_SCHEMA,
               "efficiency": EFFICIENCY_SCHEMA, "improvement": IMPROVEMENT_SCHEMA}
    for name, schema in schemas.items():
        assert pq.read_schema(out / "metrics" / f"{name}.parquet").names[: len(schema)] == schema.names, name
    pw = pd.read_parquet(out / "metrics" / "pairwise.parquet")
    # the 4 eval images of every student, every metric (filler images only make the 2x2 grids)
    assert pw.groupby("model").size().to_dict() == {m: 4 * len(METRICS) for m in MODELS[1:]}
    assert set(pw["split"]) == {"eval"}
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
    losses = {bk: pd.read_parquet(out / "train" / bk / "loss.parquet").query("split == 'train'")
              .pivot_table(index="step", columns="term", values="value") for bk in BK}
    for bk, terms in losses.items():  # the loss is its weighted terms; the ablation trained without feature KD
        weighted = terms[["task_weighted", "out_kd_weighted", "feat_kd_weighted"]].sum(axis=1)
        assert np.allclose(terms["loss"], weighted, rtol=1e-5) and (terms["feat_kd"] > 0).all()
        assert (terms["feat_kd_weighted"] > 0).all() if bk == "bk_small" else (terms["feat_kd_weighted"] == 0).all()
    assert losses["bk_small"]["feat_kd"].iloc[0] == losses["bk_small_nofeat"]["feat_kd"].iloc[0]  # one start: the teacher's blocks
    assert params["teacher"] == params["w1"] > params["w0p5"]  # the x1 student has the teacher's architecture
    for folder, names in (("figures", ["metric_bars", "radar", "distributions", "distribution_metrics",
                                       "attribute_accuracy", "efficiency", "loss_curves", "dmkd_accuracy",
                                       "dmkd_curves", "size_heatmap", "size_trajectory", "size_denoising",
                                       "size_cost", "size_quality"]),
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


@pytest.mark.slow
def test_same_config_gives_identical_prompts_and_images(smoke_repo, tmp_path):
    """Prompts and every model's images made again from scratch are identical (CPU, same config and
    seed). Only the prompt and generation rules run again (--allowed-rules, no mtime trigger): the
    trained models stay, their own determinism is the resume tests' (bit-identical weights)."""
    repo = tmp_path / "again"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    out = repo / "results" / "smoke"
    prompts = {s: pd.read_parquet(out / "prompts" / f"{s}.parquet") for s in ("train", "eval", "filler")}
    images = {}
    manifests = sorted((out / "images").glob("*/[!.]*.parquet"))  # not the hidden records beside them
    for man in manifests:
        images |= {(man.parent.name, f): np.asarray(Image.open(man.parent / f)) for f in pd.read_parquet(man)["file"]}
    assert len(manifests) == 11 and len(images) == 6 * 4 + 13 + 2 * 3  # every student's eval, the teacher's 3 splits, 2 fillers
    shutil.rmtree(out / "prompts")
    shutil.rmtree(out / "images")
    targets = [str(p.relative_to(repo)) for p in manifests]
    again = ("--allowed-rules", "prompts", "generate", "--rerun-triggers", "params", "input", "software-env", "code")
    assert planned_jobs(repo, *SMOKE, *again, "--", *targets) == {"prompts": 3, "generate": len(manifests)}
    run(repo, *SMOKE, *again, "--", *targets)
    for split, df in prompts.items():
        pd.testing.assert_frame_equal(df, pd.read_parquet(out / "prompts" / f"{split}.parquet"))
    for (model, f), pixels in images.items():
        assert np.array_equal(pixels, np.asarray(Image.open(out / "images" / model / f))), (model, f)


@pytest.mark.slow
def test_sharded_generation_and_metrics_equal_the_unsharded_run(smoke_repo, tmp_path):
    """shards.images = 3 and shards.metrics = 2: scatter/gather jobs whose gathered manifest, images
    and pairwise table equal the 1-shard run's; changing the shard count remakes no existing image."""
    repo = tmp_path / "sharded"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    out, ref = repo / "results" / "smoke", smoke_repo / "results" / "smoke"
    shutil.rmtree(out / "images" / "teacher")
    (out / "metrics" / "pairwise" / "base_student.parquet").unlink()
    (repo / "config" / "shards.yaml").write_text("shards: {images: 3, metrics: 2}\n")
    teacher = [f"results/smoke/images/teacher/{s}.parquet" for s in ("train", "eval", "filler")]
    targets = (*teacher, "results/smoke/metrics/pairwise/base_student.parquet",
               "--configfile", "config/smoke.yaml", "config/shards.yaml")
    # the base student's eval manifest now comes from the sharded rules too: re-gathered from its images, none remade
    student = out / "images" / "base_student"
    made = {p.name: p.stat().st_mtime_ns for p in student.glob("*.png")}
    assert planned_jobs(repo, *targets) == {"generate_shard": 12, "generate": 4, "pairwise_shard": 2, "pairwise": 1}
    run(repo, *targets)
    assert {p.name: p.stat().st_mtime_ns for p in student.glob("*.png")} == made
    shards = sorted((out / "images" / "teacher" / "shards").glob("*.parquet"))
    assert [p.name for p in shards] == [f"{s}-{i}-of-3.parquet" for s in ("eval", "filler", "train") for i in range(3)]
    # batch size 4: batch-aligned slices of 4 eval, 3 filler and 6 train images (kd_core.shards.shard_bounds)
    assert [len(pd.read_parquet(p)) for p in shards] == [0, 0, 4, 0, 0, 3, 0, 4, 2]
    for split in ("train", "eval", "filler"):
        one = pd.read_parquet(ref / "images" / "teacher" / f"{split}.parquet").drop(columns="wall_time_s")
        three = pd.read_parquet(out / "images" / "teacher" / f"{split}.parquet").drop(columns="wall_time_s")
        pd.testing.assert_frame_equal(three, one)
        for f in one["file"]:
            assert np.array_equal(np.asarray(Image.open(out / "images" / "teacher" / f)),
                                  np.asarray(Image.open(ref / "images" / "teacher" / f))), f
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics" / "pairwise" / "base_student.parquet"),
                                  pd.read_parquet(ref / "metrics" / "pairwise" / "base_student.parquet"))
    assert planned_jobs(repo, *targets) == {}  # idempotent: nothing left to do


def test_tables_carry_the_provenance_the_readme_lists(smoke_repo):
    """Config, code hash, generation settings, seeds and the metric protocol, read back from the
    tables' metadata and compared with config/smoke.yaml."""
    import yaml

    cfg = yaml.safe_load((smoke_repo / "config" / "smoke.yaml").read_text())
    out = smoke_repo / "results" / "smoke"
    for split in ("train", "eval", "filler"):
        meta = read_metadata(out / "prompts" / f"{split}.parquet")
        assert meta["table"] == f"prompts/{split}" and len(meta["code_hash"]) == 16
        assert meta["config"]["seed"] == cfg["seed"] and meta["config"]["grammar"] == cfg["prompts"]["grammar"]
    for model in MODELS:  # generation settings of every model's eval images
        meta = read_metadata(out / "images" / model / "eval.parquet")
        gen = cfg["models"]["teacher" if model == "teacher" else "base_student"]["generation"]
        assert len(meta["code_hash"]) == 16 and meta["settings"]["device"] == "cpu", model
        assert {k: meta["settings"][k] for k in ("steps", "guidance_scale", "scheduler")} == {
            k: gen[k] for k in ("steps", "guidance_scale", "scheduler")}, model
    dist = read_metadata(out / "metrics" / "distribution.parquet")
    assert (dist["extractor"], dist["bootstrap"], dist["seed"]) == ("classifier", cfg["metrics"]["features"]["bootstrap"], cfg["seed"])
    assert dist["kid"]["degree"] == 3 and dist["extractor_model"].endswith("models/classifier") and "resize" in dist
    for table in ("summary", "improvement", "attribute_accuracy"):  # every per-image CI: metrics.bootstrap
        meta = read_metadata(out / "metrics" / f"{table}.parquet")
        assert (meta["bootstrap"], meta["seed"]) == (cfg["metrics"]["bootstrap"], cfg["seed"]) and meta["ci"], table
    assert "SSIM" in read_metadata(out / "metrics" / "pairwise" / "lora_student.parquet")["protocol"]
    lora = read_metadata(out / "train" / "lora" / "loss.parquet")
    assert lora["steps"] == lora["config"]["max_steps"] == cfg["lora"]["train"]["max_steps"] and lora["config"]["lr"] == cfg["lora"]["train"]["lr"]
