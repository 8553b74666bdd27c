"""Timestep MSE and trajectory divergence of width students (random weights) against a tiny SD teacher."""

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open

from kd_core.captions import DataConfig
from kd_core.errors import KDError
from kd_core.metrics.latency import LATENCY_SCHEMA, LatencyConfig, denoiser_latency
from kd_core.metrics.timestep import TIMESTEP_SCHEMA, TimestepConfig, bucket_edges, timestep_mse
from kd_core.metrics.trajectory import (
    TRAJECTORY_SCHEMA,
    TrajectoryConfig,
    grid_step_indices,
    trajectories,
)
from kd_core.models.loading import load_pipeline
from kd_core.models.width import build_width_student
from kd_core.train.distill import save_student_pipeline

from ..conftest import random_image_manifest


@pytest.fixture(scope="module")
def students(tiny_sd15, tmp_path_factory):
    root = tmp_path_factory.mktemp("students")
    pipe = load_pipeline(str(tiny_sd15), torch.device("cpu"), torch.float32)
    out = {}
    for f in (0.5, 1.0):
        out[f"w{f:g}".replace(".", "p")] = str(root / str(f))
        save_student_pipeline(pipe, build_width_student(pipe.unet, f, seed=1), root / str(f), "size_study.json", {"factor": f})
    out["same"] = str(root / "same")  # the teacher's own U-Net: zero distance
    save_student_pipeline(pipe, pipe.unet, root / "same", "size_study.json", {})
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return random_image_manifest(tmp_path_factory.mktemp("eval_images"), 5, split="eval", prompt="a red circle {i}")


def test_bucket_edges():
    assert bucket_edges(1000, 4) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    with pytest.raises(KDError, match="between 1 and 1000"):
        bucket_edges(1000, 0)


def test_timestep_mse_table(tiny_sd15, students, images, tmp_path):
    factors = {"w0p5": 0.5, "w1": 1.0, "same": 1.0}
    table = timestep_mse(str(tiny_sd15), students, factors, DataConfig(source=str(images), split="eval"),
                         tmp_path / "t.parquet", TimestepConfig(buckets=3, batch_size=2, device="cpu"), n_boot=200)
    assert list(pd.read_parquet(tmp_path / "t.parquet").columns) == TIMESTEP_SCHEMA.names
    vs_teacher = table[table["target"] == "teacher"].set_index(["model", "bucket"])["mse"]
    assert (vs_teacher.loc["same"] == 0).all() and (vs_teacher.loc["w0p5"] > 0).all()
    assert set(table.loc[table["model"] == "teacher", "target"]) == {"noise"} and set(table["n"]) == {5}
    assert table.groupby("model")["bucket"].nunique().to_dict() == {"teacher": 4, "w0p5": 4, "w1": 4, "same": 4}
    per = table[(table["model"] == "w0p5") & (table["target"] == "teacher")].set_index("bucket")["mse"]
    assert per.loc[-1] == pytest.approx(per.loc[[0, 1, 2]].mean())  # all buckets: the mean over buckets
    # teacher and its copy see the same noised latents: equal task error
    noise = table[table["target"] == "noise"].set_index(["model", "bucket"])["mse"]
    assert noise.loc["same"].tolist() == pytest.approx(noise.loc["teacher"].tolist())
    assert (table["ci_low"] <= table["mse"]).all() and (table["mse"] <= table["ci_high"]).all()


def test_trajectories_and_denoising_images(tiny_sd15, students, images, tmp_path):
    prompts = pd.read_parquet(images)
    cfg = TrajectoryConfig(n_prompts=3, steps=4, guidance_scale=3.0, grid_steps=3, device="cpu")
    table = trajectories(str(tiny_sd15), students, {"w0p5": 0.5, "w1": 1.0, "same": 1.0}, prompts,
                         tmp_path / "traj.parquet", tmp_path / "x0.safetensors", cfg, n_boot=200)
    assert list(pd.read_parquet(tmp_path / "traj.parquet").columns) == TRAJECTORY_SCHEMA.names
    assert len(table) == 3 * 2 * 4 and set(table["n"]) == {3}
    same = table[table["model"] == "same"]
    assert (same["distance"] == 0).all()
    w = table[(table["model"] == "w0p5") & (table["quantity"] == "latent")].sort_values("step")
    assert (w["distance"] > 0).all() and w["timestep"].is_monotonic_decreasing
    with safe_open(tmp_path / "x0.safetensors", "pt") as f:
        assert set(f.keys()) == {"teacher", "w0p5", "w1", "same"}
        x = f.get_tensor("w0p5")
        assert x.dtype == torch.uint8 and x.shape == (3, 3, 3, 64, 64)  # grid steps, prompts, RGB, H, W
        assert f.metadata()["steps"] == ",".join(map(str, grid_step_indices(4, 3)))
        assert torch.equal(f.get_tensor("same"), f.get_tensor("teacher"))


def test_interleaved_step_latency_and_flops(tiny_sd15, students, tmp_path):
    factors = {"w0p5": 0.5, "w1": 1.0, "same": 1.0}
    table = denoiser_latency(str(tiny_sd15), students, factors, LatencyConfig(batch_sizes=(1, 3), rounds=4, warmup=1,
                                                                              device="cpu", guidance_scale=2.0),
                             tmp_path / "lat.parquet", n_boot=100)
    assert pq.read_schema(tmp_path / "lat.parquet").names == LATENCY_SCHEMA.names
    assert len(table) == 4 * 2 and (table["rounds"] == 4).all() and (table["step_ms"] > 0).all()
    assert ((table["ci_low"] <= table["step_ms"]) & (table["step_ms"] <= table["ci_high"])).all()
    assert ((table["ratio_ci_low"] <= table["ratio_teacher"]) & (table["ratio_teacher"] <= table["ratio_ci_high"])).all()
    assert (table.loc[table["model"] == "teacher", "ratio_teacher"] == 1.0).all()
    g = table.pivot(index="model", columns="batch_size", values="gflops")
    # FLOPs: the same architecture counts the same, width x0.5 fewer, three images three times one
    assert g.loc["same", 1] == g.loc["teacher", 1] == g.loc["w1", 1] and g.loc["w0p5", 1] < g.loc["w1", 1] / 2
    assert g.loc["teacher", 3] == pytest.approx(3 * g.loc["teacher", 1])
    # guidance doubles the U-Net batch: the FLOPs of 2 latents per image
    unguided = denoiser_latency(str(tiny_sd15), {}, {}, LatencyConfig(batch_sizes=(1,), rounds=2, warmup=0, device="cpu"),
                                n_boot=10)
    assert g.loc["teacher", 1] == pytest.approx(2 * unguided["gflops"].iloc[0])
    assert table.set_index(["model", "batch_size"])["params"].loc[("w0p5", 1)] < table.set_index(["model", "batch_size"])["params"].loc[("w1", 1)]
