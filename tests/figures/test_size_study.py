import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from kd_core.errors import KDError
from kd_core.figures.size_study import (
    cost_plot,
    denoising_grid,
    heatmap,
    load_summary,
    quality_plot,
    trajectory_plot,
)
from kd_core.io import write_parquet
from kd_core.metrics.latency import LATENCY_SCHEMA
from kd_core.metrics.size_study import SIZE_SCHEMA, pareto_front, size_study_summary
from kd_core.metrics.timestep import TIMESTEP_SCHEMA
from kd_core.metrics.trajectory import TRAJECTORY_SCHEMA

FACTORS = {"w0p25": 0.25, "w0p5": 0.5, "w1": 1.0}
PARAMS = {"teacher": 1000, "w0p25": 80, "w0p5": 260, "w1": 1000}


def tables(tmp_path):
    rows = []
    for m, f in {"teacher": 1.0, **FACTORS}.items():
        for target in ("noise", "teacher") if m != "teacher" else ("noise",):
            values = [(0.2 if target == "noise" else 0.1 / f) * (b + 1) for b in range(4)]
            for b, v in [*enumerate(values), (-1, sum(values) / 4)]:
                lo, hi = (0, 999) if b < 0 else (250 * b, 250 * b + 249)
                rows.append((m, f, PARAMS[m], b, lo, hi, target, v, v * 0.9, v * 1.1, 16))
    write_parquet(pd.DataFrame(rows, columns=TIMESTEP_SCHEMA.names), tmp_path / "ts.parquet", TIMESTEP_SCHEMA, "t")
    rows = [(m, f, s, 999 - 40 * s, q, 0.01 * s / f, 0.009 * s / f, 0.011 * s / f, 4)
            for m, f in FACTORS.items() for s in range(25) for q in ("latent", "x0")]
    write_parquet(pd.DataFrame(rows, columns=TRAJECTORY_SCHEMA.names), tmp_path / "tr.parquet", TRAJECTORY_SCHEMA, "t")
    eff = [{"model": m, "metric": k, "value": v, "unit": "ms"} for m in PARAMS for k, v in
           (("latency_per_step", PARAMS[m] / 100), ("latency_per_image", PARAMS[m] / 4), ("peak_memory", PARAMS[m] * 2))]
    pd.DataFrame(eff).to_parquet(tmp_path / "eff.parquet")
    fid = {"teacher": 50.0, "w0p25": 120.0, "w0p5": 45.0, "w1": 60.0}
    dist = [{"model": m, "reference": "real", "split": "eval", "metric": k, "value": v, "ci_low": v - 5, "ci_high": v + 5}
            for m, f in fid.items() for k, v in (("fid", f), ("kid", f / 10))]
    pd.DataFrame(dist).to_parquet(tmp_path / "dist.parquet")
    # interleaved step latency: x0.25 is timed slower than x0.5 (overhead-bound), FLOPs grow with width
    step = {"teacher": 9.0, "w0p25": 6.0, "w0p5": 5.0, "w1": 9.5}
    lat = [(m, 1.0 if m == "teacher" else FACTORS[m], b, step[m] * b, step[m] * b - 1, step[m] * b + 1, step[m] / 9,
            step[m] / 9 - 0.1, step[m] / 9 + 0.1, PARAMS[m] / 100 * b,
            PARAMS[m], 10, "cpu", "float32") for m in PARAMS for b in (1, 4)]
    write_parquet(pd.DataFrame(lat, columns=LATENCY_SCHEMA.names), tmp_path / "lat.parquet", LATENCY_SCHEMA, "t")


def test_pareto_front():
    assert pareto_front(np.array([1, 2, 3, 4]), np.array([5, 3, 4, 1])).tolist() == [True, True, False, True]


def test_size_summary_and_figures(tmp_path):
    tables(tmp_path)
    out = size_study_summary(tmp_path / "ts.parquet", tmp_path / "tr.parquet", tmp_path / "eff.parquet", tmp_path / "dist.parquet",
                       FACTORS, tmp_path / "size.parquet").set_index("model")
    assert list(pd.read_parquet(tmp_path / "size.parquet").columns) == SIZE_SCHEMA.names
    assert list(out.index) == ["teacher", "w0p25", "w0p5", "w1"]
    assert out.loc["w0p5", "mse_teacher"] == pytest.approx(np.mean([0.2 * (b + 1) for b in range(4)]))
    assert out.loc["teacher", "mse_teacher"] == 0 and out.loc["w1", "trajectory_final"] == pytest.approx(0.24)
    assert out.loc["w0p5", "latency_per_image_ms"] == 65 and out.loc["w0p25", "fid"] == 120
    # frontier on (latency, FID): w0p25 fastest, w0p5 better and still cheap; teacher and w1 dominated by w0p5
    assert out["on_frontier"].to_dict() == {"teacher": False, "w0p25": True, "w0p5": True, "w1": False}
    summary = load_summary(tmp_path / "size.parquet")
    assert summary.attrs["spearman_width_vs_mse_teacher"] == pytest.approx(-1.0)
    assert summary.attrs["spearman_width_vs_latency"] == pytest.approx(1.0)  # no latency table: per image
    assert summary.attrs["spearman_width_vs_mse_teacher_p"] == pytest.approx(2 / 6)  # exact: 2 of 3! orderings
    timed = size_study_summary(tmp_path / "ts.parquet", tmp_path / "tr.parquet", tmp_path / "eff.parquet", tmp_path / "dist.parquet",
                         FACTORS, tmp_path / "size_t.parquet", latency=tmp_path / "lat.parquet").set_index("model")
    assert timed.loc["w0p5", "step_ms"] == 5.0 and timed.loc["w0p5", "step_ms_batch"] == 20.0
    assert timed.loc["w1", "gflops_per_step"] == 10.0 and timed.loc["w0p25", "step_ms_ci_low"] == 5.0
    timed_meta = load_summary(tmp_path / "size_t.parquet").attrs
    assert timed_meta["spearman_latency_column"] == "step_ms" and timed_meta["latency_batches"] == [1, 4]
    assert timed_meta["spearman_width_vs_latency"] == pytest.approx(0.5)  # ranks 2, 1, 3 against 1, 2, 3
    assert timed_meta["spearman_width_vs_latency_p"] == pytest.approx(1.0)  # every ordering of 3 has |rho| >= 0.5
    cost_t = cost_plot(load_summary(tmp_path / "size_t.parquet"), tmp_path / "cost_t.png")
    assert (tmp_path / "cost_t.png").stat().st_size > 10_000
    # interleaved step latency at 1 and 4 images, then GFLOPs, latency per image, memory, each against parameters
    assert [a.get_ylabel() for a in cost_t.axes] == ["U-Net step latency, interleaved (ms)", "GFLOPs per step",
                                                     "latency per image (ms)", "peak memory (MiB)"]
    step_axis = cost_t.axes[0]
    students = timed.drop("teacher").sort_values("factor")
    (one_image,) = [c for c in step_axis.containers if c.get_label() == "students, 1 image(s)"]
    assert list(one_image.lines[0].get_ydata()) == list(students["step_ms"])
    assert [line.get_label() for line in step_axis.get_lines() if line.get_label() == "students, 4 images"] == ["students, 4 images"]
    heat = heatmap(tmp_path / "ts.parquet", tmp_path / "heat.png")
    # left: students (rows, by width) x buckets (columns), the MSE written in each cell; right: task MSE per model
    grid = heat.axes[0]
    ts = pd.read_parquet(tmp_path / "ts.parquet").query("bucket >= 0 and target == 'teacher' and model != 'teacher'")
    assert [t.get_text() for t in grid.get_yticklabels()] == ["w0p25 (x0.25)", "w0p5 (x0.5)", "w1 (x1)"]
    assert sorted(float(t.get_text()) for t in grid.texts) == pytest.approx(sorted(float(f"{v:.3g}") for v in ts["mse"]))
    assert [line.get_label() for line in heat.axes[1].get_lines()] == ["teacher", "w0p25", "w0p5", "w1"]
    traj = trajectory_plot(tmp_path / "tr.parquet", tmp_path / "traj.png")
    assert [a.get_title() for a in traj.axes] == ["Latent distance to the teacher's path", "Predicted-x0 distance to the teacher's"]
    assert [line.get_label() for line in traj.axes[0].get_lines()] == ["w0p25 (x0.25)", "w0p5 (x0.5)", "w1 (x1)"]
    cost_plot(summary, tmp_path / "cost.png")
    quality = quality_plot(summary, tmp_path / "quality.png")
    size_ax, error_ax, cost_ax = quality.axes
    assert {c.get_label() for c in size_ax.containers} == {"students", "teacher"}
    assert list(error_ax.containers[0].lines[0].get_ydata()) == list(out.drop("teacher").sort_values("factor")["mse_teacher"])
    (front,) = [line for line in cost_ax.get_lines() if line.get_label() == "efficiency frontier"]
    assert len(front.get_xdata()) == int(out["on_frontier"].sum()) == 2
    x0 = {m: torch.randint(0, 255, (3, 2, 3, 16, 16), dtype=torch.uint8) for m in ("teacher", *FACTORS)}
    save_file(x0, tmp_path / "x0.safetensors", metadata={"models": ",".join(x0), "steps": "0,5,9",
                                                         "timesteps": "999,500,1", "prompts": "a\nb"})
    grid_fig = denoising_grid(tmp_path / "x0.safetensors", tmp_path / "grid.png")
    # rows: teacher then students; columns: 3 grid steps x 2 prompts; each cell that model's x0 at that step
    assert len(grid_fig.axes) == 4 * 6 and [grid_fig.axes[6 * i].get_ylabel() for i in range(4)] == list(x0)
    assert [a.get_title() for a in grid_fig.axes[:3]] == ["step 0\n(t=999)", "step 5\n(t=500)", "step 9\n(t=1)"]
    cell = grid_fig.axes[6 * 2 + 3 + 1].get_images()[0].get_array()  # row w0p5, prompt 1, step 5
    assert np.array_equal(np.asarray(cell), x0["w0p5"][1, 1].permute(1, 2, 0).numpy())
    for name in ("heat", "traj", "cost", "quality", "grid"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000 and (tmp_path / f"{name}.pdf").is_file()


def test_heatmap_needs_students(tmp_path):
    tables(tmp_path)
    teacher_only = pd.read_parquet(tmp_path / "ts.parquet").query("model == 'teacher'")
    with pytest.raises(KDError, match="no width students"):
        heatmap(teacher_only, tmp_path / "x.png")


def test_size_summary_reads_attribute_accuracy(tmp_path):
    """Per image the fraction of attributes drawn right, then the mean over images with a bootstrap CI;
    Spearman of width with it in the metadata, and how the students began."""
    tables(tmp_path)
    right = {"teacher": [1, 1, 1, 1], "w0p25": [0, 0, 1, 0], "w0p5": [1, 0, 1, 0], "w1": [1, 1, 1, 0]}  # 4 images
    paths = []
    for model, per_image in right.items():
        rows = [{"model": model, "split": split, "prompt_id": f"p{i}", "seed": 7, "attribute": attr, "target": "x",
                 "predicted": "x", "correct": bool(ok) if attr == "shape" else True}
                for split in ("eval", "train") for i, ok in enumerate(per_image) for attr in ("shape", "colour")]
        pd.DataFrame(rows).to_parquet(tmp_path / f"{model}.parquet", index=False)
        paths.append(tmp_path / f"{model}.parquet")
    out = size_study_summary(tmp_path / "ts.parquet", tmp_path / "tr.parquet", tmp_path / "eff.parquet", tmp_path / "dist.parquet",
                             FACTORS, tmp_path / "size.parquet", attributes=paths, init="teacher", n_boot=2000).set_index("model")
    # two attributes per image, colour always right: accuracy = (1 + shape) / 2 per image
    expected = {m: np.mean([(1 + ok) / 2 for ok in v]) for m, v in right.items()}
    assert out["accuracy"].to_dict() == pytest.approx(expected)
    assert (out["accuracy_ci_low"] <= out["accuracy"]).all() and (out["accuracy"] <= out["accuracy_ci_high"]).all()
    assert out.loc["w0p5", "accuracy_ci_low"] < out.loc["w0p5", "accuracy_ci_high"]
    meta = load_summary(tmp_path / "size.parquet").attrs
    assert meta["spearman_width_vs_accuracy"] == pytest.approx(1.0) and meta["init"] == "teacher"
    without = size_study_summary(tmp_path / "ts.parquet", tmp_path / "tr.parquet", tmp_path / "eff.parquet",
                                 tmp_path / "dist.parquet", FACTORS)
    assert without["accuracy"].isna().all()
