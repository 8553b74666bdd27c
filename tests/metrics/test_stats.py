import numpy as np
import pandas as pd
import pytest

from kd_core.metrics.stats import paired_improvement


def _long(delta, n=60, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random(n)
    rows = []
    for i in range(n):
        rows.append({"model": "base_student", "prompt_id": f"p{i}", "seed": 0, "metric": "ssim", "value": base[i]})
        rows.append({"model": "lora_student", "prompt_id": f"p{i}", "seed": 0, "metric": "ssim",
                     "value": base[i] + delta + 0.01 * rng.standard_normal()})
        rows.append({"model": "base_student", "prompt_id": f"p{i}", "seed": 0, "metric": "mse", "value": base[i]})
        rows.append({"model": "lora_student", "prompt_id": f"p{i}", "seed": 0, "metric": "mse",
                     "value": base[i] + delta + 0.01 * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_a_real_improvement_has_a_ci_excluding_zero(tmp_path):
    t = paired_improvement(_long(0.05), "base_student", tmp_path / "imp.parquet").set_index("metric")
    assert t.loc["ssim", "improved"] and t.loc["ssim", "ci_low"] > 0 and t.loc["ssim", "p_value"] < 1e-6
    assert not t.loc["mse", "improved"]  # mse rose: lower is better
    assert abs(t.loc["ssim", "difference"] - 0.05) < 0.01 and t.loc["ssim", "n"] == 60


def test_no_difference_is_not_an_improvement():
    t = paired_improvement(_long(0.0), "base_student").set_index("metric")
    assert not t["improved"].any() and t.loc["ssim", "ci_low"] < 0 < t.loc["ssim", "ci_high"]


def test_summary_has_cis_and_skips_non_finite(tmp_path):
    from kd_core.metrics.stats import SUMMARY_SCHEMA, summarize

    long = _long(0.05).assign(split="eval")
    long.loc[0, "value"] = float("inf")
    out = summarize(long, tmp_path / "s.parquet", n_boot=500)
    assert list(pd.read_parquet(tmp_path / "s.parquet").columns) == SUMMARY_SCHEMA.names
    row = out.set_index(["model", "metric"]).loc[("base_student", "ssim")]
    assert row["n"] == 59 and row["n_nonfinite"] == 1  # the planted inf (base_student ssim, p0) is left out
    finite = long.query("model == 'base_student' and metric == 'ssim'")["value"].iloc[1:]
    assert row["mean"] == pytest.approx(finite.mean()) and row["ci_low"] < row["mean"] < row["ci_high"]
    other = out.set_index(["model", "metric"]).loc[("lora_student", "ssim")]
    assert other["n"] == 60 and other["n_nonfinite"] == 0
    assert (out["ci_low"] <= out["mean"]).all() and (out["mean"] <= out["ci_high"]).all()
    assert not out.set_index(["model", "metric"]).loc[("base_student", "mse"), "higher_is_better"]


def test_improvement_skips_metrics_without_direction():
    long = _long(0.05)
    long = pd.concat([long, long[long["metric"] == "ssim"].assign(metric="sharpness_ratio")])
    t = paired_improvement(long, "base_student")
    assert "sharpness_ratio" not in set(t["metric"])
