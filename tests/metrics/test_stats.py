import numpy as np
import pandas as pd

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
