import numpy as np
import pandas as pd
import pytest

from kd_core.errors import KDError
from kd_core.figures import plots
from kd_core.metrics.stats import summarize


def _per_image(n=20):
    rng = np.random.default_rng(0)
    rows = []
    for model, shift in (("teacher", 0.3), ("base_student", 0.0), ("lora_student", 0.1)):
        for i in range(n):
            metrics = {"accuracy_all": float(rng.random() < 0.5 + shift), "accuracy_shape": float(rng.random() < 0.4 + shift)}
            if model != "teacher":
                metrics |= {"ssim": 0.5 + shift + 0.05 * rng.standard_normal(), "mse": 0.2 - shift / 2 + 0.01 * rng.random(),
                            "psnr": 10 + 10 * shift, "sharpness_ratio": 1 + rng.random(), "sharpness_error": rng.random(),
                            "phash_similarity": 0.6 + shift}
            rows += [{"model": model, "split": "eval", "prompt_id": f"p{i}", "seed": 0, "metric": k, "value": v}
                     for k, v in metrics.items()]
    return pd.DataFrame(rows)


def test_metric_figures_written_as_png_and_pdf(tmp_path):
    long = _per_image()
    summary = summarize(long, n_boot=200)
    bars, radar, dist = plots.metric_figures(summary, long, tmp_path / "bars.png", tmp_path / "radar.png", tmp_path / "dist.png")
    for name in ("bars", "radar", "dist"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    # bars: one panel per metric, one bar per model that has it, at the summary's mean
    eval_ = summary[summary["split"] == "eval"].set_index(["metric", "model"])
    panels = [a for a in bars.axes if a.patches]
    assert len(panels) == eval_.index.get_level_values(0).nunique() == 8
    for ax in panels:
        metric = next(m for m in eval_.index.get_level_values(0) if ax.get_title().startswith(plots._label(m)))
        names = [t.get_text() for t in ax.get_xticklabels()]
        assert names == [m for m in ("teacher", "base_student", "lora_student") if (metric, m) in eval_.index]
        assert [p.get_height() for p in ax.patches] == pytest.approx([eval_.loc[(metric, m), "mean"] for m in names])
    assert {a.get_title() for a in panels} >= {"SSIM (higher better)", "MSE (lower better)"}
    # radar: one closed line per student, on the axes of the metrics with a direction
    (polar,) = radar.axes
    assert [line.get_label() for line in polar.get_lines()] == ["base_student", "lora_student"]
    assert len(polar.get_xticklabels()) == len(plots.normalised_scores(summary).columns)
    # distributions: one box per model in each per-image metric's panel (accuracies are bars, not boxes)
    boxes = [a for a in dist.axes if a.get_title()]
    assert sorted(a.get_title() for a in boxes) == sorted(plots._label(m) for m in ("ssim", "mse", "psnr", "sharpness_ratio",
                                                                                     "sharpness_error", "phash_similarity"))
    assert all([t.get_text() for t in a.get_xticklabels()] == ["base_student", "lora_student"] for a in boxes)


def test_radar_scores_relative_to_the_best():
    scores = plots.normalised_scores(summarize(_per_image(), n_boot=200))
    assert list(scores.index) == ["base_student", "lora_student"]  # the teacher lacks the pairwise metrics
    assert "sharpness_ratio" not in scores.columns  # no direction
    assert scores.loc["lora_student", "ssim"] == 1 and scores.loc["base_student", "ssim"] < 1
    assert scores.loc["lora_student", "mse"] == 1 and 0 < scores.loc["base_student", "mse"] < 1  # lower is better
    assert ((scores >= 0) & (scores <= 1)).all().all()


def test_loss_curves_every_run_and_term(tmp_path):
    steps = np.arange(1, 101)
    lora = pd.concat([pd.DataFrame({"step": steps, "epoch": 0, "split": "train", "term": t, "value": v})
                      for t, v in (("loss", 1 / steps), ("task_mse", 2 / steps), ("lr", np.full(100, 1e-3)))])
    lora.to_parquet(tmp_path / "lora.parquet")
    toy = pd.DataFrame({"model": ["vae"] * 50 + ["teacher"] * 50, "step": np.r_[steps[:50], steps[:50]],
                        "term": "task_mse", "value": 1 / np.r_[steps[:50], steps[:50]]})
    toy.to_parquet(tmp_path / "toy.parquet")
    toy[toy["model"] == "vae"].to_parquet(tmp_path / "vae.parquet")
    fig = plots.loss_curves({"LoRA": tmp_path / "lora.parquet", "toy": tmp_path / "toy.parquet",
                             "toy VAE": tmp_path / "vae.parquet"}, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000 and (tmp_path / "loss.pdf").is_file()
    panels = {a.get_title(): a for a in fig.axes if a.get_title()}
    # a panel per run, and per model within a run of several models
    assert list(panels) == ["LoRA", "toy: vae", "toy: teacher", "toy VAE"]
    labelled = [line.get_label() for line in panels["LoRA"].get_lines() if not line.get_label().startswith("_")]
    assert labelled == ["train loss", "train task_mse"]  # every term but lr, which has its own axis
    lr_axis = [a for a in fig.axes if a.get_ylabel() == "lr"]
    assert len(lr_axis) == 1 and list(lr_axis[0].get_lines()[0].get_ydata()) == [1e-3] * 100
    # raw values faint, the running mean on top
    raw, mean = panels["LoRA"].get_lines()[:2]
    assert list(raw.get_ydata()) == pytest.approx(list(1 / steps)) and mean.get_ydata()[-1] > 1 / 100
    with pytest.raises(KDError, match="no training runs"):
        plots.loss_curves({}, tmp_path / "none.png")


def test_efficiency_distribution_and_attribute_figures(tmp_path):
    summary = summarize(_per_image(), n_boot=200)
    eff = pd.DataFrame([{"model": m, "metric": k, "value": v, "unit": "", "device": "cpu", "dtype": "float32", "steps": 3,
                         "resolution": 32, "batch_size": 1, "repeats": 1}
                        for m, s in (("teacher", 3.0), ("base_student", 1.0), ("lora_student", 1.0))
                        for k, v in (("latency_per_image", 10 * s), ("params_denoiser", 1e6 * s))])
    fig = plots.efficiency_plot(eff, summary, tmp_path / "eff.png")
    latency, params = fig.axes
    assert latency.get_xlabel() == "latency per image (ms)" and params.get_xlabel() == "denoiser parameters (M)"
    assert latency.get_ylabel() == plots._label("accuracy_all")
    points = {c.get_label(): c for c in latency.containers}  # one error bar per model, at (cost, quality)
    assert set(points) == {"teacher", "base_student", "lora_student"}
    q = summary.query("split == 'eval' and metric == 'accuracy_all'").set_index("model")["mean"]
    assert points["teacher"].lines[0].get_xdata()[0] == 30.0 and points["teacher"].lines[0].get_ydata()[0] == pytest.approx(q["teacher"])
    assert {c.get_label(): c.lines[0].get_xdata()[0] for c in params.containers} == {"teacher": 3.0, "base_student": 1.0,
                                                                                     "lora_student": 1.0}
    dist = pd.DataFrame([{"model": m, "reference": "teacher", "split": "eval", "metric": k, "value": 1.0, "ci_low": 0.5,
                          "ci_high": 1.5, "n_model": 10, "n_reference": 10, "extractor": "classifier", "feature_dim": 8}
                         for m in ("base_student", "lora_student") for k in ("fid", "kid")])
    bars = plots.distribution_bars(dist.assign(value=[1.0, 2.0, 3.0, 4.0]), tmp_path / "dist.png")
    panels = {a.get_title(): [p.get_height() for p in a.patches] for a in bars.axes if a.patches}
    assert panels == {"FID vs teacher (n=10, lower better)": [1.0, 3.0], "KID vs teacher (n=10, lower better)": [2.0, 4.0]}
    acc = pd.DataFrame([{"model": m, "split": "eval", "attribute": a, "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}
                        for m in ("teacher", "base_student") for a in ("shape", "colour")])
    (ax,) = plots.attribute_bars(acc.assign(accuracy=[0.9, 0.8, 0.5, 0.45]), tmp_path / "acc.png").axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["colour", "shape"]
    heights = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers if getattr(c, "patches", None)}
    assert heights == {"teacher": [0.8, 0.9], "base_student": [0.45, 0.5]}  # per model, attributes in tick order
    for name in ("eff", "dist", "acc"):
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.pdf").is_file()
    with pytest.raises(KDError, match="empty"):
        plots.distribution_bars(dist.iloc[:0], tmp_path / "none.png")
